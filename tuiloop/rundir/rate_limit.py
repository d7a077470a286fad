"""Warnings that a flood could repeat without end, told a few times and then counted.

A client that sends the control socket 5,000 bad requests must not write 5,000 warnings into
the run's event log. :class:`RateLimitedWarnings` tells the first few as they come, then counts
the rest and tells them as one line per interval ("... 4,997 more ... in the last 60s"); after a
quiet interval it tells the next ones in full again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Summary = Callable[[int, float, str], str]  # (count held back, seconds they span, the last one) -> the line


class RateLimitedWarnings:
    """Calls ``warn(text)`` for the first ``first`` warnings, then once per ``every`` seconds with
    ``summary(count, seconds, last_text)`` for those held back. Thread-safe; the owner calls
    :meth:`tick` by :meth:`due` (a summary is never told late by more than its caller's delay)."""

    def __init__(
        self,
        warn: Callable[[str], None],
        summary: Summary,
        first: int = 3,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.first = first
        self.every = every
        self._warn = warn
        self._summary = summary
        self._clock = clock
        self._lock = threading.Lock()
        self._told = 0  # told in full since the last quiet interval
        self._held = 0  # counted since the last summary
        self._held_since = 0.0  # when the first of them came
        self._held_last = ""
        self._last_at = 0.0  # when the latest warning came, told or held
        self._muted = False

    def __call__(self, text: str) -> None:
        with self._lock:
            if self._muted:
                return
            now = self._last_at = self._clock()
            if self._told < self.first:
                self._told += 1
                self._warn(text)
                return
            if not self._held:
                self._held_since = now
            self._held += 1
            self._held_last = text

    def due(self) -> float | None:
        """When :meth:`tick` has something to do (the clock's time), or None."""
        with self._lock:
            if self._held:
                return self._held_since + self.every
            if self._told:
                return self._last_at + self.every  # a quiet interval starts over
            return None

    def tick(self) -> None:
        """Tell the count held back once its interval is over; start over after a quiet interval."""
        with self._lock:
            now = self._clock()
            if self._held and now >= self._held_since + self.every:
                self._tell_held(now)
            elif not self._held and self._told and now >= self._last_at + self.every:
                self._told = 0

    def flush(self, mute: bool = False) -> None:
        """Tell the count held back now (the log is about to end); ``mute``: tell nothing more."""
        with self._lock:
            if self._held and not self._muted:
                self._tell_held(self._clock())
            self._muted = self._muted or mute

    def _tell_held(self, now: float) -> None:
        count, self._held = self._held, 0
        self._warn(self._summary(count, max(now - self._held_since, 0.0), self._held_last))
