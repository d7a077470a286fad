"""Signals of the training process: Ctrl+C and SIGTERM stop gracefully, a second Ctrl+C forces.

Python runs signal handlers only in the main thread, between bytecodes: a main thread blocked in
a long step, a C call or the user's ``__getitem__`` would never see the second Ctrl+C. So the
handlers do nothing themselves; the C-level handler writes each signal's number to a wakeup
pipe, and a thread of ours reads it and acts at once.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any


class Signals:
    """SIGINT: first stops gracefully (checkpoint and summary), second forces; SIGTERM stops;
    SIGHUP is ignored, so a hung-up terminal does not end the run."""

    def __init__(
        self, stop: Callable[[str], None], force: Callable[[], None], terminate: Callable[[], None] | None = None
    ) -> None:
        """``terminate``: what SIGTERM does (default: stop gracefully)."""
        self.stop = stop
        self.force = force
        self.terminate = terminate or (lambda: stop("terminated (SIGTERM)"))
        self.interrupts = 0
        self._previous: dict[int, Any] = {}
        self._old_wakeup = -1
        self._pipe: tuple[int, int] | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        r, w = os.pipe()
        os.set_blocking(w, False)
        self._pipe = (r, w)
        self._old_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        for sig, handler in ((signal.SIGINT, _noop), (signal.SIGTERM, _noop), (signal.SIGHUP, signal.SIG_IGN)):
            self._previous[sig] = signal.signal(sig, handler)
        threading.Thread(target=self._watch, args=(r,), name="tuiloop-signals", daemon=True).start()

    def restore(self) -> None:
        if self._pipe is None:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._old_wakeup)
        _, w = self._pipe
        self._pipe = None
        os.close(w)  # the watcher reads EOF, closes its end and ends

    def _watch(self, r: int) -> None:
        try:
            while data := os.read(r, 64):
                for signum in data:
                    self._on(signum)
        except OSError:
            pass
        finally:
            os.close(r)

    def _on(self, signum: int) -> None:
        if signum == signal.SIGTERM:
            self.terminate()
        elif signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts > 1:
                _say(b"\ntuiloop: second interrupt, exiting now without saving\n")
                self.force()
                return
            _say(b"\ntuiloop: interrupt: stopping after this step and saving (press Ctrl+C again to force)\n")
            self.stop("interrupted (SIGINT)")


def _say(text: bytes) -> None:
    try:
        os.write(2, text)
    except OSError:
        pass  # no terminal to tell


def _noop(signum: int, frame: Any) -> None:
    """The Python-level handler: the watcher thread does the work (see the module docstring)."""
