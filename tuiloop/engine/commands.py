"""Every command a run obeys, in one table, and the one small interface through which they reach the engine.

The table (:data:`COMMANDS`) says, for each command, its name on the control socket, its key in
the monitor, the footer's label, the ``?`` screen's line, which loops obey it and whether the
monitor asks before sending it. The monitor's keys, its ``?`` screen, the control server, the
agreement slots of a distributed run and ``tuiloop.track`` are all derived from it. It stays
free of torch and textual: the monitor imports it.

Key presses, ``attach`` clients, signals: all of them call :meth:`Commands.send`. The training
loop looks at :attr:`Commands.pending` once per step (a plain attribute read) and only takes the
lock when something is waiting. ``force`` does not wait for the loop: it ends the process at
once, from the sender's thread, even while a step or the user's dataset is blocked.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from tuiloop.engine.exits import EXIT_FORCED

# The loops that obey commands: a spec run (or the Python Trainer) in one process, a spec run
# over several ranks (torchrun), a loop of the user's own tracked with tuiloop.track, the Hugging
# Face Trainer and Lightning's Trainer through tuiloop's callbacks (one process or several).
Loop = Literal["spec", "distributed", "track", "transformers", "lightning"]
EVERY_LOOP: frozenset[Loop] = frozenset({"spec", "distributed", "track", "transformers", "lightning"})
SPEC_LOOPS: frozenset[Loop] = frozenset({"spec", "distributed"})
# the loops whose epochs and optimizers tuiloop reaches
STEERED_LOOPS: frozenset[Loop] = SPEC_LOOPS | {"transformers", "lightning"}


@dataclass(frozen=True)
class Command:
    """One command: how it is sent, the key that sends it, and who obeys it."""

    name: str  # as sent over the control socket
    help: str  # the ``?`` screen's line for its key (commands with the same line share a row there)
    key: str = ""  # the monitor's key, as Textual names it ("": no key of its own)
    shown: str = ""  # how the footer and ``?`` write the key, where Textual would write it otherwise
    label: str = ""  # the footer's word for it
    obeyed_by: frozenset[Loop] = EVERY_LOOP
    asks: bool = False  # the monitor asks before sending it
    at_once: bool = False  # it ends the process from the sender's thread, without waiting for the loop
    # The ranks of a distributed run agree on it in a slot of its own; False: it never reaches the
    # loop (force).
    agreed: bool = True


PAUSE_HELP = "pause at the next step boundary; on a paused run, resume"
STOP_AFTER_HELP = (
    "stop after this epoch (validation, checkpoints and early stopping run first); on a run set to stop, go on"
)
LR_HELP = "halve / double the learning rate of every parameter group from the next step (asks first)"
COMMANDS = (
    # p sends the one of the two that the monitor's view of the run calls for: the commands
    # themselves do not toggle, so a retry (of a pause that timed out on a frozen run) changes nothing.
    Command("pause", PAUSE_HELP, key="p", label="Pause"),
    Command("resume", PAUSE_HELP, key="p", label="Resume"),
    Command("save", "save a checkpoint now", key="s", label="Save"),
    Command(
        "stop",
        "stop: finish the step, save checkpoints/last.pt, exit (asks first)",
        key="q",
        label="Stop",
        asks=True,
    ),
    Command("force", "exit at once, without saving (a second Ctrl+C)", at_once=True, agreed=False),
    # e, as p: the one the view calls for; sent twice, either does what it does once
    Command("stop_after_epoch", STOP_AFTER_HELP, key="e", label="Stop@epoch", obeyed_by=STEERED_LOOPS),
    Command("go_on", STOP_AFTER_HELP, key="e", label="Go on", obeyed_by=STEERED_LOOPS),
    Command("lr_down", LR_HELP, key="minus", shown="-", label="LR½", obeyed_by=STEERED_LOOPS, asks=True),
    Command("lr_up", LR_HELP, key="plus", shown="+", label="LR×2", obeyed_by=STEERED_LOOPS, asks=True),
    Command(
        "suspend",
        "suspend to disk: save the full state and end the training process, freeing the GPU",
        key="P",
        shown="P",
        label="Suspend",
        obeyed_by=SPEC_LOOPS,
        asks=True,
    ),
    # It carries settings (spec key -> value: Commands.send_settings); no key of the monitor sends it.
    Command("set", "change settings from the next step (tuiloop ctl RUN set KEY=VALUE)", obeyed_by=SPEC_LOOPS),
)
COMMAND = {c.name: c for c in COMMANDS}
AGREED = tuple(c.name for c in COMMANDS if c.agreed and "distributed" in c.obeyed_by)
LR_FACTORS = {"lr_down": 0.5, "lr_up": 2.0}


def obeyed_by(loop: Loop) -> tuple[str, ...]:
    """The names of the commands a loop of this kind obeys, in the table's order."""
    return tuple(c.name for c in COMMANDS if loop in c.obeyed_by)


def _exit_now() -> None:
    os._exit(EXIT_FORCED)


class Commands:
    """Thread-safe mailbox of commands for the training loop."""

    def __init__(self) -> None:
        self._queue: deque[str] = deque()
        # RLock: a signal handler may call send() on the main thread while it holds the lock.
        self._cond = threading.Condition(threading.RLock())
        self.pending = False
        self._settings: dict[str, Any] = {}  # what `set` commands brought, not yet taken (the newest value wins)
        # What ``force`` does; a session replaces it to record the forced end before exiting.
        self.on_force: Callable[[], None] = _exit_now

    def send(self, command: str) -> None:
        """Queue a command; safe from any thread and from signal handlers' threads."""
        if command not in COMMAND:
            raise ValueError(f"unknown command {command!r}; expected one of {', '.join(COMMAND)}")
        if COMMAND[command].at_once:
            self.on_force()
            return
        with self._cond:
            self._queue.append(command)
            self.pending = True
            self._cond.notify_all()

    def send_settings(self, settings: dict[str, Any]) -> None:
        """Queue a ``set`` command with the settings it brings (spec key -> value)."""
        with self._cond:
            self._settings.update(settings)
            self._queue.append("set")
            self.pending = True
            self._cond.notify_all()

    def take_settings(self) -> dict[str, Any]:
        """The settings the ``set`` commands brought since the last call."""
        with self._cond:
            out, self._settings = self._settings, {}
        return out

    def take(self) -> list[str]:
        """Everything queued so far, oldest first."""
        self.pending = False  # cleared before draining so a racing send() is never lost
        out = []
        while self._queue:
            out.append(self._queue.popleft())
        return out

    def wait(self, timeout: float) -> list[str]:
        """Block until a command arrives (or ``timeout``), then take them all."""
        with self._cond:
            if not self._queue:
                self._cond.wait(timeout)
        return self.take()
