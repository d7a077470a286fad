"""How numbers, durations and counts read, everywhere tuiloop prints them (log lines, ls, the monitor)."""

from __future__ import annotations

import math


def value(v: float | None) -> str:
    """A metric in about 4 significant digits: 0.0866, 1.234e-05, 1.235e+04; '-' when unknown."""
    if v is None:
        return "-"
    if not math.isfinite(v):
        return str(v)
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4):
        return f"{v:.4g}"
    return f"{v:.4f}"


def lr(v: float | None) -> str:
    """A learning rate: 0.001, 3e-05."""
    return "-" if v is None else f"{v:.3g}"


def clock(seconds: float | None) -> str:
    """A duration as a clock: 4.2s under a minute, then M:SS, then H:MM:SS."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    if seconds < 59.95:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def duration(seconds: float | None) -> str:
    """A duration in a few characters, for tables: 42s, 4m05s, 2h03m, 3d04h."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def short_duration(seconds: float | None) -> str:
    """A duration as a time axis labels it: 45s, 4:05, 2h03."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}:{s % 60:02d}"
    return f"{s // 3600}h{s % 3600 // 60:02d}"


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 step', '2 steps', '1,024 batches'."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"
