"""tuiloop on two processes (torchrun, DDP, gloo on the CPU) against a hand-written DDP loop on the same work.

Both sides train bench_task's MLP on the same data, split between 2 processes of one CPU thread
each (batch 32 per process), with validation every epoch and a best-model save on rank 0:

* hand:    the DDP recipe as PyTorch's tutorial writes it: ``DistributedSampler`` + ``DataLoader``,
           ``DistributedDataParallel``, ``loss.item()`` every step, validation losses all-reduced,
           ``torch.save`` of the best model on rank 0; launched with torchrun;
* tuiloop: ``tuiloop run SPEC --headless --nproc-per-node 2``; epoch times from its event log.
           Like the hand loop it saves the best model only (``[checkpoint] last = false``);
           ``--with-last`` adds its default ``last.pt`` every epoch (fsynced, for resume).

Epoch times are the intervals between the ends of consecutive validations (the first
``--warmup`` dropped). It prints medians and tuiloop/hand, alternating the two over rounds.

After the epochs it times what keeps the ranks in step: one agreement (an ``all_reduce(MAX)`` of
six integers, read back on the host); tuiloop makes about 4 a second.

    python benchmarks/bench_ddp.py                 # about a minute on 2 cores
    python benchmarks/bench_ddp.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_engine import SPEC, steady  # noqa: E402

HAND = """
import json, os, sys, time
import torch, torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
sys.path.insert(0, os.path.dirname(__file__))
import bench_task

epochs, samples, features, batch_size, out, gpu = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6] == "gpu"
dist.init_process_group("nccl" if gpu else "gloo")
rank = dist.get_rank()
device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if gpu else torch.device("cpu")
if gpu:
    torch.cuda.set_device(device)
torch.manual_seed(0)
train_set, val_set = bench_task.data(samples=samples, features=features)
sampler = DistributedSampler(train_set, shuffle=True, seed=0)
train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler)
val_loader = DataLoader(val_set, batch_size=batch_size, sampler=DistributedSampler(val_set, shuffle=False))
model = DDP(bench_task.MLP(in_features=features).to(device), device_ids=[device.index] if gpu else None)
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
best, stamps = float("inf"), []
for epoch in range(epochs):
    sampler.set_epoch(epoch)
    model.train()
    train_loss = 0.0
    for x, y in train_loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        train_loss += loss.item()
    model.eval()
    totals = torch.zeros(2, device=device)
    with torch.no_grad():
        for x, y in val_loader:
            x, y = x.to(device), y.to(device)
            totals += torch.tensor([criterion(model(x), y).item() * len(y), len(y)], device=device)
    dist.all_reduce(totals)
    stamps.append(time.time())
    val_loss = (totals[0] / totals[1]).item()
    if rank == 0 and val_loss < best:
        best = val_loss
        torch.save(model.module.state_dict(), os.path.join(os.path.dirname(out), "best_model.pth"))
if rank == 0:
    open(out, "w").write(json.dumps(stamps))
dist.barrier()
dist.destroy_process_group()
"""

AGREE = """
import time, torch, torch.distributed as dist
dist.init_process_group("gloo")
flags = [0, 0, 0, 0, 1, 5]
for _ in range(100):
    t = torch.tensor(flags, dtype=torch.int64); dist.all_reduce(t, op=dist.ReduceOp.MAX); t.tolist()
times = []
for _ in range(2000):
    t0 = time.perf_counter()
    t = torch.tensor(flags, dtype=torch.int64); dist.all_reduce(t, op=dist.ReduceOp.MAX); t.tolist()
    times.append(time.perf_counter() - t0)
if dist.get_rank() == 0:
    times.sort()
    print(f"{times[len(times) // 2] * 1e6:.1f}")
dist.destroy_process_group()
"""


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONUNBUFFERED": "1"}


def hand(args: argparse.Namespace, workdir: Path) -> list[float]:
    shutil.copy(HERE / "bench_task.py", workdir / "bench_task.py")
    (workdir / "hand_ddp.py").write_text(HAND)
    out = workdir / "stamps.json"
    sizes = [str(v) for v in (args.epochs, args.samples, args.features, args.batch_size)]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        str(workdir / "hand_ddp.py"),
        *sizes,
        str(out),
        "gpu" if args.gpu else "cpu",
    ]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, cwd=workdir)
    if done.returncode:
        raise SystemExit(f"the hand-written DDP loop failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def tuiloop(args: argparse.Namespace, workdir: Path) -> list[float]:
    shutil.copy(HERE / "bench_task.py", workdir / "bench_task.py")
    spec = workdir / "spec.toml"
    text = SPEC.format(
        out_dir=workdir / "runs",
        epochs=args.epochs,
        features=args.features,
        batch_size=args.batch_size,
        samples=args.samples,
        train="",
    )
    spec.write_text(text.replace('device = "cpu"', 'device = "auto"') if args.gpu else text)
    sets = [] if args.with_last else ["--set", "checkpoint.last=false"]
    subprocess.run(
        [sys.executable, "-m", "tuiloop", "run", str(spec), "--headless", "--nproc-per-node", "2", *sets],
        check=True,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
    )
    (run_dir,) = (workdir / "runs").iterdir()
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    if events[-1]["event"] != "finished" or events[-1]["status"] != "completed":
        raise SystemExit(f"the tuiloop run did not complete: {events[-1]}")
    return [e["time"] for e in events if e["event"] == "validated"]


def agreement() -> float:
    with tempfile.TemporaryDirectory(prefix="tuiloop-bench-") as tmp:
        script = Path(tmp) / "agree.py"
        script.write_text(AGREE)
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script)],
            check=True,
            env=_env(),
            capture_output=True,
            text=True,
        )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--with-last", action="store_true", help="tuiloop also saves last.pt every epoch (its default)")
    parser.add_argument("--gpu", action="store_true", help="two GPUs with NCCL instead of two CPU processes with gloo")
    args = parser.parse_args()
    import torch

    steps = -(-(args.samples * 3 // 4) // 2 // args.batch_size)
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}, {os.cpu_count()} CPU(s)")
    where = "NCCL, one GPU each" if args.gpu else "gloo, 1 thread each"
    print(
        f"2 processes ({where}), MLP {args.features}-128-128-10, {args.samples * 3 // 4} train samples, batch {args.batch_size} per process ({steps} steps/epoch)"
    )
    print(f"{args.epochs} epochs, {args.rounds} rounds")
    hand_all, tl_all, ratios = [], [], []
    for r in range(args.rounds):
        order = (("hand", hand), ("tuiloop", tuiloop)) if r % 2 == 0 else (("tuiloop", tuiloop), ("hand", hand))
        med = {}
        for name, fn in order:
            with tempfile.TemporaryDirectory(prefix="tuiloop-bench-") as tmp:
                times = steady(fn(args, Path(tmp)), args.warmup)
            (hand_all if name == "hand" else tl_all).extend(times)
            med[name] = statistics.median(times)
        ratios.append(med["tuiloop"] / med["hand"])
        print(
            f"  round {r + 1}: hand DDP {med['hand'] * 1e3:7.1f} ms/epoch   tuiloop {med['tuiloop'] * 1e3:7.1f} ms/epoch   ratio {ratios[-1]:.3f}",
            flush=True,
        )
    h, t = statistics.median(hand_all), statistics.median(tl_all)
    print(
        f"  median over all steady epochs: hand {h * 1e3:.1f} ms ({h / steps * 1e6:.0f} us/step)   tuiloop {t * 1e3:.1f} ms ({t / steps * 1e6:.0f} us/step)"
    )
    print(
        f"  ratio tuiloop/hand: {t / h:.3f} (median of per-round ratios {statistics.median(ratios):.3f}; target <= 1.0)"
    )
    us = agreement()
    print(
        f"agreement: one all_reduce(MAX) of 6 ints read back on the host, median {us:.0f} us; at 4 a second that is {us * 4 / 1e4:.3f}% of the time"
    )


if __name__ == "__main__":
    main()
