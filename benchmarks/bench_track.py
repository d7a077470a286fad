"""What one ``run.log(...)`` of ``tuiloop.track`` costs a loop of your own.

A loop of ``--calls`` (default 200k) iterations that picks a float loss from a list, with and
without ``run.log(step, train_loss=loss)`` on a tracked run (a fresh run directory each round),
alternating, several rounds. The timed loop ends with ``run.validated(...)``, which writes the
values still buffered, so the time includes turning every loss into its JSON line; the writes
a few times a second during the loop are in it too. It prints us per call, per round and the median.

Variants (``--variants``):

* float:      ``run.log(step, train_loss=loss)``
* lr-samples: ``run.log(step, train_loss=loss, lr=lr, samples=32)``
* tensor:     ``run.log(step, train_loss=tensor)``, a CPU tensor (kept, detached, and read in one
              ``torch.stack`` per write)

    python benchmarks/bench_track.py
    python benchmarks/bench_track.py --rounds 9 --variants float
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tuiloop  # noqa: E402

VARIANTS = ("float", "lr-samples", "tensor")


def values(variant: str) -> list[Any]:
    """1024 losses to cycle through (floats, or CPU scalar tensors for ``tensor``)."""
    floats = [1.0 / (i + 1) for i in range(1024)]
    if variant != "tensor":
        return floats
    import torch

    return [torch.tensor(v) for v in floats]


def bare(n: int, losses: list[Any]) -> float:
    """The loop without tuiloop: seconds."""
    t0 = time.perf_counter()
    for step in range(1, n + 1):
        loss = losses[step & 1023]
    del loss
    return time.perf_counter() - t0


def tracked(n: int, losses: list[Any], variant: str) -> tuple[float, float]:
    """The same loop with run.log on a fresh tracked run: seconds in the loop, and in the final write."""
    with (
        tempfile.TemporaryDirectory(prefix="tuiloop-bench-track-") as tmp,
        tuiloop.track(Path(tmp) / "run", epochs=1) as run,
    ):
        log: Callable[..., None] = run.log
        t0 = time.perf_counter()
        if variant == "lr-samples":
            for step in range(1, n + 1):
                loss = losses[step & 1023]
                log(step, train_loss=loss, lr=0.001, samples=32)
        else:
            for step in range(1, n + 1):
                loss = losses[step & 1023]
                log(step, train_loss=loss)
        t1 = time.perf_counter()
        run.validated(1, val_loss=0.5)  # writes what is still buffered
        return t1 - t0, time.perf_counter() - t1


def measure(args: argparse.Namespace, variant: str) -> None:
    losses = values(variant)
    n = args.calls
    print(f"[{variant}] {n:,} calls per loop, {args.rounds} alternating rounds")
    per_call, writes = [], []
    for r in range(args.rounds):
        if r % 2 == 0:
            (loop, write), without = tracked(n, losses, variant), bare(n, losses)
        else:
            without, (loop, write) = bare(n, losses), tracked(n, losses, variant)
        with_log = loop + write
        per_call.append((with_log - without) / n * 1e6)
        writes.append(write / n * 1e6)
        print(
            f"  round {r + 1}: with run.log {with_log * 1e3:7.1f} ms (final write {write * 1e3:5.1f} ms)   without {without * 1e3:6.1f} ms   run.log {per_call[-1]:.3f} us per call",
            flush=True,
        )
    print(
        f"  median: run.log costs {statistics.median(per_call):.3f} us per call (rounds {min(per_call):.3f}-{max(per_call):.3f}), of which writing the values at the end {statistics.median(writes):.3f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200_000, help="run.log calls per loop (default 200000)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    parser.add_argument(
        "--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="what each call logs (default: all)"
    )
    args = parser.parse_args()
    for variant in args.variants:
        measure(args, variant)


if __name__ == "__main__":
    main()
