"""Series kept at plot resolution: a fixed number of buckets however long the run gets.

Each full bucket holds ``size`` consecutive points as their mean, minimum and maximum, so a
plot can draw the curve through the means and the envelope through the extremes: a one-step
spike stays visible after a million steps (averaging alone would hide it). When the number of
buckets reaches ``2 * resolution``, neighbouring pairs merge and ``size`` doubles, so memory and
drawing cost stay O(resolution). A batch of points is bucketed with numpy, so taking in a
day-long run costs milliseconds, not a Python call per step.

The training process keeps these series too and saves them beside the event log
(:mod:`tuiloop.rundir.eventlog`), so a view opened on a long run need not re-read every step.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

_SMALL = 32  # batches shorter than this take the plain Python path (numpy's per-call cost dominates)


class Downsampled:
    """An append-only (x, y) series downsampled to between ``resolution`` and ``2 * resolution`` buckets."""

    def __init__(self, resolution: int = 512) -> None:
        if resolution < 1:
            raise ValueError("resolution must be at least 1")
        self.resolution = resolution
        self.size = 1  # points per full bucket (a power of two)
        self.count = 0  # points appended, non-finite ones included
        # full buckets (buckets left empty by non-finite values are not kept)
        self.xs: list[float] = []
        self.ys: list[float] = []
        self.mins: list[float] = []
        self.maxs: list[float] = []
        self.last: tuple[float, float] | None = None  # the newest finite point
        self._open_bucket()

    def _open_bucket(self) -> None:
        self._sx = self._sy = 0.0  # the partial bucket: sums and count of finite points
        self._n = 0
        self._seen = 0  # points (finite or not) that went into the partial bucket
        self._lo, self._hi = math.inf, -math.inf

    def __len__(self) -> int:
        return self.count

    def append(self, x: float, y: float) -> None:
        """Add one point; a NaN or infinite ``y`` counts but is not drawn."""
        self.count += 1
        self._seen += 1
        if math.isfinite(y):
            self._sx += x
            self._sy += y
            self._n += 1
            if y < self._lo:
                self._lo = y
            if y > self._hi:
                self._hi = y
            self.last = (x, y)
        if self._seen >= self.size:
            self._close_bucket()

    def extend(self, x0: float, ys: Any, dx: float = 1.0) -> None:
        """Append ``ys`` at x = x0, x0 + dx, ... (a batch of per-step values)."""
        n = len(ys)
        if n < _SMALL:
            append = self.append
            for i, y in enumerate(ys):
                append(x0 + i * dx, y)
            return
        y = np.asarray(ys, dtype=np.float64)
        i = 0
        while i < n:
            if self._seen:  # finish the partial bucket point by point
                take = min(self.size - self._seen, n - i)
                for j in range(i, i + take):
                    self.append(x0 + j * dx, float(y[j]))
                i += take
                continue
            full = min((n - i) // self.size, 2 * self.resolution - len(self.xs))
            if full <= 0:
                if (n - i) >= self.size:  # no room: merge, then go on with bigger buckets
                    self._merge_pairs()
                    continue
                for j in range(i, n):  # the rest: a new partial bucket
                    self.append(x0 + j * dx, float(y[j]))
                return
            self._add_full(x0 + i * dx, y[i : i + full * self.size].reshape(full, self.size), dx)
            i += full * self.size
            if len(self.xs) >= 2 * self.resolution:
                self._merge_pairs()

    def _add_full(self, x_start: float, block: np.ndarray, dx: float) -> None:
        """Whole buckets at once: one row of ``block`` per bucket."""
        rows, size = block.shape
        self.count += rows * size
        finite = np.isfinite(block)
        n = finite.sum(axis=1)
        keep = n > 0
        xs = x_start + dx * (np.arange(rows) * size)[:, None] + dx * np.arange(size)[None, :]
        safe = np.where(finite, block, 0.0)
        mean_x = np.where(finite, xs, 0.0).sum(axis=1)[keep] / n[keep]
        mean_y = safe.sum(axis=1)[keep] / n[keep]
        self.xs.extend(mean_x.tolist())
        self.ys.extend(mean_y.tolist())
        self.mins.extend(np.where(finite, block, np.inf).min(axis=1)[keep].tolist())
        self.maxs.extend(np.where(finite, block, -np.inf).max(axis=1)[keep].tolist())
        if keep.any():
            row = int(np.flatnonzero(keep)[-1])
            col = int(np.flatnonzero(finite[row])[-1])
            self.last = (float(xs[row, col]), float(block[row, col]))

    def _close_bucket(self) -> None:
        if self._n:
            self.xs.append(self._sx / self._n)
            self.ys.append(self._sy / self._n)
            self.mins.append(self._lo)
            self.maxs.append(self._hi)
        self._open_bucket()
        if len(self.xs) >= 2 * self.resolution:
            self._merge_pairs()

    def _merge_pairs(self) -> None:
        # Buckets left empty by non-finite values were skipped, so a pair may hold unequal
        # counts; the plain mean is still a faithful point to draw.
        def pairs(values: list[float], how: Any) -> list[float]:
            out = [how(values[i], values[i + 1]) for i in range(0, len(values) - 1, 2)]
            return out + values[-1:] if len(values) % 2 else out

        mean = lambda a, b: (a + b) / 2  # noqa: E731
        self.xs, self.ys = pairs(self.xs, mean), pairs(self.ys, mean)
        self.mins, self.maxs = pairs(self.mins, min), pairs(self.maxs, max)
        self.size *= 2

    def drop_after(self, x: float) -> None:
        """Forget the points past ``x``: a run resumed from an earlier checkpoint redoes those
        steps. Cut at bucket granularity (the partial bucket goes, and full buckets whose mean
        lies past ``x``)."""
        keep = len(self.xs)
        while keep and self.xs[keep - 1] > x:
            keep -= 1
        del self.xs[keep:], self.ys[keep:], self.mins[keep:], self.maxs[keep:]
        self._open_bucket()
        self.count = keep * self.size
        self.last = (self.xs[-1], self.ys[-1]) if self.xs else None

    def points(self) -> tuple[list[float], list[float]]:
        """The bucket means to draw, the partial bucket last (a copy)."""
        xs, ys = list(self.xs), list(self.ys)
        if self._n:
            xs.append(self._sx / self._n)
            ys.append(self._sy / self._n)
        return xs, ys

    def envelope(self) -> tuple[list[float], list[float], list[float]]:
        """(x, minimum, maximum) of every bucket, the partial bucket last: where the extremes are."""
        xs, lo, hi = list(self.xs), list(self.mins), list(self.maxs)
        if self._n:
            xs.append(self._sx / self._n)
            lo.append(self._lo)
            hi.append(self._hi)
        return xs, lo, hi

    # ---- saving beside the event log ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution, "size": self.size, "count": self.count,
            "xs": self.xs, "ys": self.ys, "mins": self.mins, "maxs": self.maxs,
            "last": self.last, "partial": [self._sx, self._sy, self._n, self._seen, self._lo, self._hi],
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Downsampled:
        s = cls(int(d["resolution"]))
        s.size, s.count = int(d["size"]), int(d["count"])
        s.xs, s.ys, s.mins, s.maxs = list(d["xs"]), list(d["ys"]), list(d["mins"]), list(d["maxs"])
        s.last = tuple(d["last"]) if d.get("last") else None
        s._sx, s._sy, s._n, s._seen, s._lo, s._hi = d["partial"]
        return s


class Recent:
    """The last ``capacity`` points as they were logged: the detail a zoomed plot draws where
    the whole-run buckets hold many steps each. Same reading interface as :class:`Downsampled`."""

    def __init__(self, capacity: int = 4096) -> None:
        self.xs: deque[float] = deque(maxlen=capacity)
        self.ys: deque[float] = deque(maxlen=capacity)

    def extend(self, x0: float, ys: Any) -> None:
        self.xs.extend(x0 + i for i in range(len(ys)))
        self.ys.extend(ys)

    def covers(self, x: float) -> bool:
        """Whether every logged point from ``x`` on is here."""
        return bool(self.xs) and self.xs[0] <= x

    def drop_after(self, x: float) -> None:
        while self.xs and self.xs[-1] > x:
            self.xs.pop()
            self.ys.pop()

    def points(self) -> tuple[list[float], list[float]]:
        pairs = [(x, y) for x, y in zip(self.xs, self.ys, strict=True) if math.isfinite(y)]
        return [x for x, _ in pairs], [y for _, y in pairs]

    def envelope(self) -> tuple[list[float], list[float], list[float]]:
        xs, ys = self.points()
        return xs, ys, ys

    def to_dict(self) -> dict[str, Any]:
        # the steps as runs of consecutive ones, [first, count]: one run, unless a loop of its
        # own logs every few steps
        runs: list[list[Any]] = []
        for x in self.xs:
            if runs and runs[-1][0] + runs[-1][1] == x:
                runs[-1][1] += 1
            else:
                runs.append([x, 1])
        return {"capacity": self.xs.maxlen, "runs": runs, "ys": list(self.ys)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recent:
        """A saved one; raises KeyError, TypeError or ValueError if ``d`` is not one."""
        r = cls(int(d["capacity"]))
        runs, ys = d["runs"], d["ys"]
        numbers = (
            [v for run in runs for v in run]
            if type(runs) is list and all(type(run) is list and len(run) == 2 for run in runs)
            else None
        )
        if (
            numbers is None
            or type(ys) is not list
            or not all(type(v) in (float, int) for v in [*numbers, *ys])
            or sum(n for _, n in runs) != len(ys)
        ):
            raise ValueError("damaged recent points")
        at = 0
        for x0, n in runs:
            r.extend(x0, ys[at : at + n])
            at += n
        return r


def reduce_to(xs: list[float], ys: list[float], n: int, how: str = "mean") -> tuple[list[float], list[float]]:
    """Reduce consecutive points to at most ``n`` (mean x; mean, min or max y). O(len)."""
    if n <= 0 or len(xs) <= n:
        return xs, ys
    k = math.ceil(len(xs) / n)
    picks: dict[str, Callable[[list[float]], float]] = {"mean": lambda c: sum(c) / len(c), "min": min, "max": max}
    pick = picks[how]
    out_x, out_y = [], []
    for i in range(0, len(xs), k):
        cx, cy = xs[i : i + k], ys[i : i + k]
        out_x.append(sum(cx) / len(cx))
        out_y.append(pick(cy))
    return out_x, out_y


def ema(ys: list[float], span: float) -> list[float]:
    """Exponential moving average with bias correction (the first values are not pulled to 0)."""
    alpha = 2.0 / (max(span, 1.0) + 1.0)
    out: list[float] = []
    avg = 0.0
    weight = 0.0
    for y in ys:
        avg = (1 - alpha) * avg + alpha * y
        weight = (1 - alpha) * weight + alpha
        out.append(avg / weight)
    return out
