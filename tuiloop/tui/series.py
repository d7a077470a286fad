"""Series kept at plot resolution: a fixed number of buckets however long the run gets.

Each full bucket is the mean of ``size`` consecutive points. When the number of buckets reaches
``2 * resolution``, neighbouring pairs merge and ``size`` doubles, so an append costs O(1)
amortized and drawing a frame costs O(resolution), not O(number of steps).
"""

from __future__ import annotations

import math


class Downsampled:
    """An append-only (x, y) series downsampled to between ``resolution`` and ``2 * resolution`` buckets."""

    def __init__(self, resolution: int = 512) -> None:
        if resolution < 1:
            raise ValueError("resolution must be at least 1")
        self.resolution = resolution
        self.size = 1  # points per full bucket (a power of two)
        self.count = 0  # points appended, non-finite ones included
        self.xs: list[float] = []  # bucket means, full buckets only
        self.ys: list[float] = []
        self.last: tuple[float, float] | None = None  # the newest finite point
        self._sx = 0.0  # the partial bucket: sums and count of finite points
        self._sy = 0.0
        self._n = 0
        self._seen = 0  # points (finite or not) that went into the partial bucket

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
            self.last = (x, y)
        if self._seen >= self.size:
            self._close_bucket()

    def extend(self, x0: float, ys: list[float], dx: float = 1.0) -> None:
        """Append ``ys`` at x = x0, x0 + dx, ... (a batch of per-step values)."""
        append = self.append
        for i, y in enumerate(ys):
            append(x0 + i * dx, y)

    def _close_bucket(self) -> None:
        if self._n:
            self.xs.append(self._sx / self._n)
            self.ys.append(self._sy / self._n)
        self._sx = self._sy = 0.0
        self._n = self._seen = 0
        if len(self.xs) >= 2 * self.resolution:
            self._merge_pairs()

    def _merge_pairs(self) -> None:
        # Buckets left empty by non-finite values were skipped, so a pair may hold unequal
        # counts; the plain mean is still a faithful point to draw.
        xs, ys = self.xs, self.ys
        self.xs = [(xs[i] + xs[i + 1]) / 2 for i in range(0, len(xs) - 1, 2)]
        self.ys = [(ys[i] + ys[i + 1]) / 2 for i in range(0, len(ys) - 1, 2)]
        if len(xs) % 2:
            self.xs.append(xs[-1])
            self.ys.append(ys[-1])
        self.size *= 2

    def drop_after(self, x: float) -> None:
        """Forget the points past ``x``: a run resumed from an earlier checkpoint redoes those
        steps. Cut at bucket granularity (the partial bucket goes, and full buckets whose mean
        lies past ``x``)."""
        keep = len(self.xs)
        while keep and self.xs[keep - 1] > x:
            keep -= 1
        del self.xs[keep:], self.ys[keep:]
        self._sx = self._sy = 0.0
        self._n = self._seen = 0
        self.count = keep * self.size
        self.last = (self.xs[-1], self.ys[-1]) if self.xs else None

    def points(self) -> tuple[list[float], list[float]]:
        """The bucket means to draw, the partial bucket last (a copy)."""
        xs, ys = list(self.xs), list(self.ys)
        if self._n:
            xs.append(self._sx / self._n)
            ys.append(self._sy / self._n)
        return xs, ys


def reduce_to(xs: list[float], ys: list[float], n: int) -> tuple[list[float], list[float]]:
    """Average consecutive points down to at most ``n`` (O(len); used on bucketed series)."""
    if n <= 0 or len(xs) <= n:
        return xs, ys
    k = math.ceil(len(xs) / n)
    out_x, out_y = [], []
    for i in range(0, len(xs), k):
        cx, cy = xs[i : i + k], ys[i : i + k]
        out_x.append(sum(cx) / len(cx))
        out_y.append(sum(cy) / len(cy))
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
