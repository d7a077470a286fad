"""Commands for a loop that is not tuiloop's own: pause, save and stop, taken on the loop's thread.

The control socket's thread and the signal thread only put commands in a :class:`Commands`
mailbox; :class:`Obeying` reads it when the loop asks (``should_stop``, ``save_requested``,
``wait_if_paused``), so the loop's state changes on the loop's own thread, between its steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tuiloop.engine.commands import COMMAND, Commands

PAUSED_POLL_S = 0.5


class Obeying:
    """Pause, save and stop for an outside loop. ``on_stop(reason)`` is told once, when a stop is
    first asked; ``warn(command)`` is told of a command such a loop does not obey."""

    def __init__(self, on_stop: Callable[[str], None], warn: Callable[[str], None]) -> None:
        self.commands = Commands()  # filled by the control socket's thread (and signals)
        self.on_stop = on_stop
        self.warn = warn
        self.paused = False
        self.stopping = False
        self.stop_reason = ""
        self.save_asked = False

    def poll(self) -> None:
        """Apply what the mailbox holds (a plain attribute read when it holds nothing)."""
        if self.commands.pending:
            for cmd in self.commands.take():
                self._apply(cmd)

    def request_stop(self, reason: str) -> None:
        """A stop from another thread (a signal): the loop sees it through the mailbox."""
        self.stop_reason = self.stop_reason or reason
        self.commands.send("stop")

    def take_save(self) -> bool:
        """True once after each save command (presses before the loop looks count once)."""
        self.poll()
        asked, self.save_asked = self.save_asked, False
        return asked

    def wait_while_paused(self, on_pause: Callable[[], None], on_resume: Callable[[], None]) -> bool:
        """Block while paused, until resumed or stopped; True if it waited. ``on_pause`` is called
        before waiting, ``on_resume`` after a resume (not after a stop)."""
        self.poll()
        if not self.paused or self.stopping:
            return False
        on_pause()
        while self.paused and not self.stopping:
            for cmd in self.commands.wait(PAUSED_POLL_S):
                self._apply(cmd)
        if not self.stopping:
            on_resume()
        return True

    def _apply(self, cmd: str) -> None:
        if cmd in ("pause", "resume"):
            self.paused = cmd == "pause"
        elif cmd == "save":
            self.save_asked = True
        elif cmd == "stop":
            if not self.stopping:
                self.stopping = True
                self.stop_reason = self.stop_reason or "stopped by request"
                self.on_stop(self.stop_reason)
        else:
            self.warn(cmd)


class Obeyed(Commands):
    """The mailbox of a loop that obeys only some commands: another one is refused (``refuse``
    says so) instead of acting as something else (a suspend the loop cannot do)."""

    def __init__(self, obeys: Iterable[str], refuse: Callable[[str], None]) -> None:
        super().__init__()
        self.obeys = frozenset(obeys)
        self.refuse = refuse

    def send(self, command: str) -> None:
        if command in COMMAND and command not in self.obeys and not COMMAND[command].at_once:
            self.refuse(command)
            return
        super().send(command)
