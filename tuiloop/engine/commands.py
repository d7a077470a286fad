"""The one small interface through which commands reach the engine.

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

from tuiloop.engine.exits import EXIT_FORCED

COMMANDS = (
    "pause",
    "resume",
    "toggle_pause",
    "stop",
    "save",
    "force",
    "stop_after_epoch",
    "lr_down",
    "lr_up",
    "suspend",
)
LR_FACTORS = {"lr_down": 0.5, "lr_up": 2.0}


def _exit_now() -> None:
    os._exit(EXIT_FORCED)


class Commands:
    """Thread-safe mailbox of commands for the training loop."""

    def __init__(self) -> None:
        self._queue: deque[str] = deque()
        # RLock: a signal handler may call send() on the main thread while it holds the lock.
        self._cond = threading.Condition(threading.RLock())
        self.pending = False
        # What ``force`` does; a session replaces it to record the forced end before exiting.
        self.on_force: Callable[[], None] = _exit_now

    def send(self, command: str) -> None:
        """Queue a command; safe from any thread and from signal handlers' threads."""
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}")
        if command == "force":
            self.on_force()
            return
        with self._cond:
            self._queue.append(command)
            self.pending = True
            self._cond.notify_all()

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
