"""The monitor's keys that change the run: pause, save, stop, stop after this epoch, the learning
rate, suspend to disk and resume, Ctrl+C and force. A mixin of :class:`~tuiloop.tui.app.MonitorApp`.

Each key's action is named for the command it sends, and the table of commands
(:mod:`tuiloop.engine.commands`) says whether it asks first: the keys that cannot be undone do.
Commands go out from worker threads, so a stuck run cannot freeze the screen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App
from textual.message import Message

from tuiloop.engine.commands import COMMAND
from tuiloop.rundir.live_settings import refused_by_loop, settings_for
from tuiloop.spec.errors import SpecError
from tuiloop.tui.prompt import SettingsPrompt
from tuiloop.tui.screens import Confirm, confirmation

Commander = Callable[..., Any]  # (command, **fields): fields beside it in the request (set's settings)
Resumer = Callable[[], tuple[Any, str]]  # starts a resumed training process: (process, session)
FORCE_WAIT_S = 2.0  # a forced run that has not gone by then is killed


@dataclass(eq=False)
class Resumed(Message):
    """A suspended run is training again in a new process (``error``: why it could not)."""

    proc: Any
    session: str
    error: str | None = None


@dataclass(eq=False)
class CommandDone(Message):
    """A command reached the run (``error`` None) or could not be delivered."""

    command: str
    error: str | None


class RunKeys(App[str]):
    """The keys that steer the run (the app provides model, source, commander and resumer)."""

    model: Any
    source: Any
    commander: Commander | None
    resumer: Resumer | None
    read_only: bool
    attached: bool
    _quit_reader: threading.Event  # set: the app is closing
    _watch_again: threading.Event  # set: the app's reader watches the new process
    _after_change: Callable[[], None]  # the app redraws (or leaves) after the model changed

    def init_keys(self) -> None:
        self.resuming = False
        self.stop_sent = False
        self.forced = False
        self._leave_when_over = False

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide the keys that cannot act now (read-only view, run over) from the key bar."""
        over = self.model.over
        if action in COMMAND:  # a key of the table of commands: its action is named for the command it sends
            obeyed = self.model.started.commands if self.model.started is not None else None
            if action in ("pause", "resume") and (self.model.state == "paused") != (action == "resume"):
                return False  # p sends the one the run's state calls for: pause, or resume a paused run
            if action in ("stop_after_epoch", "go_on") and self.model.stop_after_epoch != (action == "go_on"):
                return False  # e likewise: stop after this epoch, or go on when the run is set to stop
            return not self.read_only and not over and (obeyed is None or action in obeyed)
        if action == "settings":  # a loop of your own refuses in the prompt, saying why
            return not self.read_only and not over
        if action == "resume_run":
            return self.resumer is not None and self.model.state == "suspended" and not self.resuming
        if action == "leave":
            return self.read_only or over
        if action == "detach":
            return not self.read_only and not over
        return True

    def steer(self, command: str, then: Callable[[], object] | None = None) -> None:
        """Send ``command`` (or do ``then``, which sends it), asking first where the table says so."""
        go = then or (lambda: self.send(command))
        if COMMAND[command].asks:
            self._ask(confirmation(command, self.model.lr), go)
        else:
            go()

    def _ask(self, dialog: Confirm, then: Callable[[], object]) -> None:
        """Ask, and ``then`` on yes while the run is still on."""
        if isinstance(self.screen, Confirm):
            return

        def answered(yes: bool | None) -> None:
            if yes and not self.model.over:
                then()

        self.push_screen(dialog, answered)

    def action_pause(self) -> None:
        self.steer("pause")

    def action_resume(self) -> None:
        self.steer("resume")

    def action_save(self) -> None:
        self.steer("save")
        self.model.note(time.time(), "info", "save requested: the checkpoint is written at the next step boundary")

    def action_stop(self) -> None:
        if self.stop_sent:
            self.model.note(time.time(), "warning", "already stopping; Ctrl+C forces an exit without saving")
            return
        self.steer("stop", self._request_stop)

    def action_stop_after_epoch(self) -> None:
        self.steer("stop_after_epoch")  # the run logs it

    def action_go_on(self) -> None:
        self.steer("go_on")

    def action_lr_down(self) -> None:
        self.steer("lr_down")

    def action_lr_up(self) -> None:
        self.steer("lr_up")

    def action_settings(self) -> None:
        """``:``: settings for the live run, checked as ``tuiloop ctl RUN set`` checks them, then sent."""
        if self.read_only or self.model.over or isinstance(self.screen, (Confirm, SettingsPrompt)):
            return
        run_dir = Path(self.model.run_dir)
        obeyed = self.model.started.commands if self.model.started is not None else None

        def check(items: list[str]) -> dict[str, Any]:
            refused = refused_by_loop(run_dir.name, obeyed)
            if refused:
                raise SpecError("", refused)
            return settings_for(run_dir, items, where="set")

        def chosen(settings: dict[str, Any] | None) -> None:
            if settings and not self.model.over:
                said = ", ".join(f"{k} = {v!r}" for k, v in settings.items())
                self.model.note(time.time(), "info", f"set {said}: from the next step")
                self.send("set", settings=settings)

        self.push_screen(SettingsPrompt(check), chosen)

    def action_suspend(self) -> None:
        def suspend() -> None:
            self.send("suspend")
            self.model.note(
                time.time(), "warning", "suspending: saving the full state, then the training process exits"
            )

        self.steer("suspend", suspend)

    def action_resume_run(self) -> None:
        if self.resumer is None or self.resuming or self.model.state != "suspended":
            return
        self.resuming = True
        self.refresh_bindings()
        self.model.note(time.time(), "info", "resuming: starting a new training process from checkpoints/last.pt…")
        self._start_resumed()

    @work(thread=True, group="commands")
    def _start_resumed(self) -> None:
        assert self.resumer is not None
        try:
            proc, session = self.resumer()
        except Exception as e:
            self.post_message(Resumed(None, "", str(e) or type(e).__name__))
            return
        self.post_message(Resumed(proc, session))

    def on_resumed(self, message: Resumed) -> None:
        self.resuming = False
        if message.error is not None:
            self.model.note(time.time(), "error", f"could not resume: {message.error}")
            self.refresh_bindings()
            return
        self.source.follow(message.proc)
        self.model.expect_session = message.session
        self.model.state, self.model.state_reason = "starting", "resuming"
        self.stop_sent = self.forced = self._leave_when_over = False
        self._watch_again.set()
        self._after_change()

    def action_interrupt(self) -> None:
        """Ctrl+C: stop gracefully (no question: it is the interrupt key); a second one forces.

        In a monitor opened with ``attach`` it detaches instead: another viewer's habit must not
        end someone's long run (``q`` still stops it, after asking).
        """
        if self.read_only or self.model.over:
            self.exit("left")
            return
        if self.attached:
            self.exit("detached")
            return
        if isinstance(self.screen, Confirm):
            self.screen.dismiss(False)
        if not self.stop_sent:
            self._request_stop()
            self.model.note(
                time.time(),
                "warning",
                "interrupt: stopping after this step and saving (Ctrl+C again forces an exit without saving)",
            )
            return
        self._force()

    def _request_stop(self) -> None:
        self.stop_sent = True
        self._leave_when_over = True
        self.send("stop")

    def _force(self) -> None:
        """Second Ctrl+C: the run exits at once without saving; the monitor closes once it is gone."""
        if self.forced:
            return
        self.forced = True
        self.model.gone_status = "forced"
        self.model.note(time.time(), "error", "forcing the training process to exit now, without saving…")
        self._deliver_force()

    @work(thread=True, group="commands")
    def _deliver_force(self) -> None:
        try:
            if self.commander is None:
                raise RuntimeError("read-only")
            self.commander("force")
        except Exception:
            pass  # not listening (still starting, or stuck): our own child is killed below
        deadline = time.monotonic() + FORCE_WAIT_S
        while time.monotonic() < deadline and self.source.alive():
            time.sleep(0.05)
        kill = getattr(self.source, "kill", None)
        if self.source.alive() and kill is not None:
            kill()

    # ---- commands ---------------------------------------------------------------------------------
    @work(thread=True, group="commands")
    def send(self, command: str, **fields: Any) -> None:
        """Deliver ``command`` (``fields`` beside it) to the run; while it is still starting (no
        socket yet), keep trying."""
        if self.commander is None:
            return
        deadline = time.monotonic() + 60.0
        while True:
            try:
                self.commander(command, **fields)
            except Exception as e:
                starting = self.model.started is None and isinstance(e.__cause__, FileNotFoundError)
                if starting and time.monotonic() < deadline and not self._quit_reader.is_set():
                    time.sleep(0.25)
                    continue
                self.post_message(CommandDone(command, str(e)))
                return
            self.post_message(CommandDone(command, None))
            return

    def on_command_done(self, message: CommandDone) -> None:
        if message.error is not None:
            self.model.note(time.time(), "error", f"{message.command}: {message.error}")
            if message.command == "stop":
                self.stop_sent = self._leave_when_over = False
