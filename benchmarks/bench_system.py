"""What sampling the machine (CPU, memory, GPUs every 2 s, from a thread) costs the training loop.

The same small MLP training (bench_task's model and data, batch size 32, Adam, one torch
thread, tuiloop's Batches) runs for a fixed number of epochs, with the system sampler writing to
a real events.jsonl and without it, alternating, several rounds:

* part 1: the sampler at its real interval (2 s); medians of the rounds and on/off;
* part 2: the same at a much shorter interval (``--fast``, default 0.01 s), so the cost is large
  enough to measure: the training time each sample costs, and what that is at 2 s;
* part 3: one ``SystemSampler.sample()`` call, timed alone (with NVML where there is a GPU).

    python benchmarks/bench_system.py                   # about 3 minutes
    python benchmarks/bench_system.py --rounds 3 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import bench_task  # noqa: E402  (sets torch to one thread)
import torch  # noqa: E402
from torch import nn  # noqa: E402

from tuiloop.engine.batches import Batches  # noqa: E402
from tuiloop.rundir.eventlog import EventLog  # noqa: E402
from tuiloop.runner.system import INTERVAL_S, SystemSampler, sample_cost  # noqa: E402


def train(batches: Batches, epochs: int) -> float:
    """Seconds to train ``epochs`` epochs from the same start (the loop a user would write)."""
    torch.manual_seed(0)
    model = bench_task.MLP(in_features=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    model.train()
    t0 = time.perf_counter()
    for epoch in range(epochs):
        for x, y in batches.epoch(epoch):
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def timed(batches: Batches, epochs: int, interval: float | None, run_dir: Path) -> tuple[float, int]:
    """(seconds, samples taken) for one round; ``interval`` None: no sampler."""
    if interval is None:
        return train(batches, epochs), 0
    log = EventLog(run_dir)
    sampler = SystemSampler(log, interval).start()
    try:
        seconds = train(batches, epochs)
    finally:
        sampler.stop()
        log.close()
    return seconds, sampler.samples


def compare(
    batches: Batches, epochs: int, interval: float, rounds: int, run_dir: Path
) -> tuple[list[float], list[float], list[int]]:
    """Alternating rounds without and with the sampler (ABBA order, so drift cancels)."""
    off, on, samples = [], [], []
    for r in range(rounds):
        order = (None, interval) if r % 2 == 0 else (interval, None)
        for what in order:
            seconds, n = timed(batches, epochs, what, run_dir)
            if what is None:
                off.append(seconds)
            else:
                on.append(seconds)
                samples.append(n)
    return off, on, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each kind (default 7)")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="about how long one round trains (default 10: 5 samples at 2 s)"
    )
    parser.add_argument("--fast", type=float, default=0.01, help="part 2's interval in seconds (default 0.01)")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    train_set, _ = bench_task.data(samples=4096, features=64)
    batches = Batches(train_set, torch.device("cpu"), 32, shuffle=True, seed=0)
    train(batches, 2)  # warm up
    per_epoch = train(batches, 5) / 5
    epochs = max(int(args.seconds / per_epoch), 1)
    print(f"one round: {epochs} epochs x {len(train_set) // 32} steps, about {epochs * per_epoch:.1f}s")

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        off, on, samples = compare(batches, epochs, INTERVAL_S, args.rounds, run_dir)
        base, with_sampler = statistics.median(off), statistics.median(on)
        pairs = statistics.median(b / a for a, b in zip(off, on, strict=True))
        print(
            f"\npart 1: sampler every {INTERVAL_S:g}s, {args.rounds} rounds each, {statistics.median(samples):.0f} samples a round"
        )
        print(f"  without: median {base:.3f}s   (rounds {', '.join(f'{t:.2f}' for t in off)})")
        print(f"  with:    median {with_sampler:.3f}s   (rounds {', '.join(f'{t:.2f}' for t in on)})")
        print(
            f"  with/without: {with_sampler / base:.4f} (medians), {pairs:.4f} (median of round pairs); spread of the rounds without: {(max(off) - min(off)) / base:.2%}"
        )

        off2, on2, samples2 = compare(batches, epochs, args.fast, args.rounds, run_dir)
        base2 = statistics.median(off2)
        per_sample = statistics.median((b - a) / n for a, b, n in zip(off2, on2, samples2, strict=True))
        print(f"\npart 2: sampler every {args.fast:g}s, {statistics.median(samples2):.0f} samples a round")
        print(
            f"  without: median {base2:.3f}s   with: median {statistics.median(on2):.3f}s   with/without: {statistics.median(on2) / base2:.4f}"
        )
        print(
            f"  training time lost per sample: {per_sample * 1e6:.0f} us  ->  at one sample every {INTERVAL_S:g}s: {per_sample / INTERVAL_S:.4%} of training time"
        )

    cost = sample_cost(1000)
    probe = SystemSampler(lambda e: None)
    probe._start_nvml()
    gpus = len(probe._handles)
    probe.stop()
    print(
        f"\npart 3: one sample() call: {cost * 1e6:.0f} us (median of 1000; {gpus} GPU(s) through NVML) = {cost / INTERVAL_S:.4%} of one core at one sample every {INTERVAL_S:g}s"
    )


if __name__ == "__main__":
    main()
