"""Series at plot resolution: bounded buckets with means and extremes, bulk intake, saving."""

from __future__ import annotations

import json
import math
import random

import pytest

from tuiloop.rundir.series import Downsampled


def test_a_one_step_spike_survives_a_million_steps() -> None:
    s = Downsampled(resolution=512)
    ys = [1.0 + 0.01 * math.sin(i) for i in range(1_000_000)]
    ys[654_321] = 1e6
    s.extend(1, ys[:500_000])
    s.extend(500_001, ys[500_000:])
    xs, lo, hi = s.envelope()
    assert len(xs) <= 2 * 512 + 1
    assert max(hi) == 1e6, "the maximum of the spike's bucket is the spike"
    (bucket,) = [i for i, h in enumerate(hi) if h == 1e6]
    assert abs(xs[bucket] - 654_322) <= s.size
    assert max(s.points()[1]) < 1e6 / s.size * 2 + 2, "the mean alone would hide it"


@pytest.mark.parametrize("chunks", [[1000], [7, 993], [31, 32, 33, 904], [500, 500]])
def test_bulk_intake_equals_one_point_at_a_time(chunks: list[int]) -> None:
    rng = random.Random(0)
    ys = [rng.gauss(0, 1) for _ in range(sum(chunks))]
    ys[17] = float("nan")
    ys[400:430] = [float("inf")] * 30  # a whole bucket of non-finite values is skipped
    one, bulk = Downsampled(16), Downsampled(16)
    for i, y in enumerate(ys):
        one.append(i + 1, y)
    start = 0
    for c in chunks:
        bulk.extend(start + 1, ys[start : start + c])
        start += c
    assert (bulk.count, bulk.size, bulk.last) == (one.count, one.size, one.last)
    for a, b in zip(bulk.envelope(), one.envelope(), strict=True):
        assert a == pytest.approx(b)
    assert bulk.points() == (pytest.approx(one.points()[0]), pytest.approx(one.points()[1]))


def test_saved_and_restored_series_go_on_identically() -> None:
    s = Downsampled(8)
    s.extend(1, [float(i % 7) for i in range(333)])
    t = Downsampled.from_dict(s.to_dict())
    for series in (s, t):
        series.extend(334, [float(i % 5) for i in range(100)])
    assert t.envelope() == s.envelope() and t.points() == s.points() and t.count == s.count


def test_the_last_steps_round_trip_whatever_steps_a_loop_logs() -> None:
    """A loop of its own may log every tenth step: the saved last steps keep their own steps."""
    from tuiloop.rundir.series import Recent

    r = Recent(capacity=8)
    for step in range(0, 100, 10):
        r.extend(step, [step / 100])
    r.extend(100, [0.5, 0.25, 0.125])  # then three consecutive steps in one flush
    back = Recent.from_dict(json.loads(json.dumps(r.to_dict())))
    assert (
        back.points()
        == r.points()
        == ([50, 60, 70, 80, 90, 100, 101, 102], [0.5, 0.6, 0.7, 0.8, 0.9, 0.5, 0.25, 0.125])
    )
    assert back.covers(50) and not back.covers(40)
