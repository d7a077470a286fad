"""tuiloop vs the plain training loop it replaces: steady-state time per epoch, and per-step overhead.

Part 1 trains the same small MLP on the same in-memory data (batch size 32, Adam, one CPU
thread) two ways, alternating, several rounds:

* plain:   the seed's "Complete Training Template" as written: ``DataLoader(shuffle=True)``,
           ``loss.item()`` every step, validation every epoch, ``torch.save`` of the best model;
* tuiloop: ``tuiloop run SPEC --headless`` in a subprocess, on a spec and model/data module
           written to a temporary directory; its epoch times come from the run's own
           ``events.jsonl`` time stamps, so they measure exactly what the product does
           (including its event log and its best.pt/last.pt checkpoints every epoch).

Epoch times are the intervals between the ends of consecutive validations; the first
``--warmup`` intervals of each run are dropped. It prints the medians and tuiloop/plain.

Part 1 runs each training path (``--paths``): float32, bf16-mixed (the plain loop under CPU
autocast) and gradient accumulation (the plain loop dividing the loss and stepping every 4
batches), each against the plain loop doing the same work.

Part 2 (``--overhead``) measures what the engine itself adds per step: the Trainer (event
buffering, command checks, the NaN check, the JSON-lines log) against a minimal hand loop that
uses the same fast batching (:class:`tuiloop.engine.batches.Batches`), training only; for each
path (``--variants``), and for the gradient norm, what measuring it costs the Trainer.

``--profile`` runs tuiloop's headless path in-process under cProfile and prints the top entries.

``--device cuda`` (on a GPU box) runs part 3 instead: part 2's comparison on the GPU, the Trainer
against a hand loop doing the same work on the same device (the same Batches, cached on the GPU;
the hand loop keeps its losses on the device and reads them once per epoch, as tuiloop reads
them once per flush), for float32, bf16-mixed (CUDA autocast) and torch.compile (both sides
compiled; the first epochs, where it compiles, are dropped). Timings are taken after
``torch.cuda.synchronize()``. It also counts the host syncs of one steady epoch on each side
with ``torch.cuda.set_sync_debug_mode("warn")``: tuiloop's come from its log flushes alone.

    python benchmarks/bench_engine.py                # part 1 and part 2, every path (a few minutes)
    python benchmarks/bench_engine.py --compare --rounds 9 --paths fp32
    python benchmarks/bench_engine.py --overhead --variants grad-norm
    python benchmarks/bench_engine.py --profile
    python benchmarks/bench_engine.py --device cuda --batch-size 256 --samples 65536
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import bench_task  # noqa: E402  (sets torch to one thread)
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from tuiloop.engine.batches import Batches  # noqa: E402

SPEC = """\
[run]
name = "bench"
out_dir = "{out_dir}"
seed = 0
device = "cpu"
epochs = {epochs}

[model]
target = "bench_task.py:MLP"
in_features = {features}

[data]
target = "bench_task.py:data"
batch_size = {batch_size}
samples = {samples}
features = {features}

[loss]
target = "CrossEntropyLoss"

[optimizer]
target = "Adam"
lr = 1e-3

[checkpoint]
best = true
last = true
{train}"""


# ---- part 1: plain loop vs `tuiloop run --headless` -----------------------------------------
def plain_loop(args: argparse.Namespace, workdir: Path, variant: str = "fp32") -> list[float]:
    """The seed's Complete Training Template; returns the time stamp at the end of each validation.

    ``bf16``: forward and loss under CPU autocast, as the PyTorch AMP recipe writes it;
    ``accumulate``: the loss divided by ``ACCUMULATE`` and a step every ``ACCUMULATE`` batches.
    """
    torch.manual_seed(0)
    train_set, val_set = bench_task.data(samples=args.samples, features=args.features)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=args.batch_size)
    out = io.StringIO()  # tuiloop's plain lines go to /dev/null; the template's prints go here

    device = torch.device("cpu")
    model = bench_task.MLP(in_features=args.features).to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    num_epochs = args.epochs
    best_val_loss = float("inf")
    stamps = []
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if variant == "bf16" else contextlib.nullcontext
    group = ACCUMULATE if variant == "accumulate" else 1
    for epoch in range(num_epochs):
        model.train()
        train_loss = 0
        optimizer.zero_grad()
        for i, (batch_x, batch_y) in enumerate(train_loader):
            batch_x, batch_y = batch_x.to(device), batch_y.to(device)
            with autocast():
                output = model(batch_x)
                loss = criterion(output, batch_y)
            (loss / group).backward()
            if (i + 1) % group == 0 or i + 1 == len(train_loader):
                optimizer.step()
                optimizer.zero_grad()
            train_loss += loss.item()
        model.eval()
        val_loss = 0
        with torch.no_grad(), autocast():
            for batch_x, batch_y in val_loader:
                batch_x, batch_y = batch_x.to(device), batch_y.to(device)
                output = model(batch_x)
                loss = criterion(output, batch_y)
                val_loss += loss.item()
        stamps.append(time.time())  # the point where tuiloop emits its `validated` event
        print(f"Epoch {epoch + 1}/{num_epochs}", file=out)
        print(f"  Train Loss: {train_loss / len(train_loader):.4f}", file=out)
        print(f"  Val Loss: {val_loss / len(val_loader):.4f}", file=out)
        if val_loss < best_val_loss:
            best_val_loss = val_loss
            torch.save(model.state_dict(), workdir / "best_model.pth")
    return stamps


def write_spec(args: argparse.Namespace, workdir: Path, variant: str = "fp32") -> Path:
    shutil.copy(HERE / "bench_task.py", workdir / "bench_task.py")
    spec = workdir / "spec.toml"
    train = {
        "fp32": "",
        "bf16": '\n[train]\nprecision = "bf16-mixed"\n',
        "accumulate": f"\n[train]\naccumulate_grad_batches = {ACCUMULATE}\n",
    }[variant]
    spec.write_text(
        SPEC.format(
            out_dir=workdir / "runs",
            epochs=args.epochs,
            features=args.features,
            batch_size=args.batch_size,
            samples=args.samples,
            train=train,
        )
    )
    return spec


def tuiloop_run(args: argparse.Namespace, workdir: Path, variant: str = "fp32") -> list[float]:
    """``tuiloop run SPEC --headless`` in a subprocess; the `validated` time stamps of its event log."""
    spec = write_spec(args, workdir, variant)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "tuiloop", "run", str(spec), "--headless"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        cwd=workdir,
    )
    (run_dir,) = (workdir / "runs").iterdir()
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    finished = events[-1]
    if finished["event"] != "finished" or finished["status"] != "completed":
        raise SystemExit(f"the tuiloop run did not complete: {finished}")
    return [e["time"] for e in events if e["event"] == "validated"]


def steady(stamps: list[float], warmup: int) -> list[float]:
    """Epoch intervals after the first ``warmup`` of them."""
    return [b - a for a, b in zip(stamps[:-1], stamps[1:], strict=True)][warmup:]


def part1(args: argparse.Namespace) -> None:
    for variant in args.paths:
        part1_variant(args, variant)


def part1_variant(args: argparse.Namespace, variant: str) -> None:
    train_set, val_set = bench_task.data(samples=args.samples, features=args.features)
    steps = -(-len(train_set) // args.batch_size)
    what = {
        "fp32": "float32",
        "bf16": "bf16-mixed (CPU autocast)",
        "accumulate": f"accumulate_grad_batches = {ACCUMULATE}",
    }[variant]
    print(
        f"part 1 [{what}]: MLP {args.features}-128-128-10, {len(train_set)} train / {len(val_set)} val samples, "
        f"batch {args.batch_size} ({steps} batches/epoch), Adam, {args.epochs} epochs (first {args.warmup} intervals dropped), 1 CPU thread, {args.rounds} rounds"
    )
    plain_all, tl_all, ratios = [], [], []
    for r in range(args.rounds):
        order = (
            (("plain", plain_loop), ("tuiloop", tuiloop_run))
            if r % 2 == 0
            else (("tuiloop", tuiloop_run), ("plain", plain_loop))
        )
        med = {}
        for name, fn in order:
            with tempfile.TemporaryDirectory(prefix="tuiloop-bench-") as tmp:
                times = steady(fn(args, Path(tmp), variant), args.warmup)
            (plain_all if name == "plain" else tl_all).extend(times)
            med[name] = statistics.median(times)
        ratios.append(med["tuiloop"] / med["plain"])
        print(
            f"  round {r + 1}: plain {med['plain'] * 1e3:7.1f} ms/epoch   tuiloop {med['tuiloop'] * 1e3:7.1f} ms/epoch   ratio {ratios[-1]:.3f}",
            flush=True,
        )
    p, t = statistics.median(plain_all), statistics.median(tl_all)
    print(
        f"  median over all steady epochs: plain {p * 1e3:.1f} ms ({p / steps * 1e6:.0f} us/batch)   tuiloop {t * 1e3:.1f} ms ({t / steps * 1e6:.0f} us/batch)"
    )
    print(
        f"  ratio tuiloop/plain: {t / p:.3f} (median of per-round ratios {statistics.median(ratios):.3f}; target <= 0.90)"
    )


# ---- part 2: the engine's own per-step overhead ---------------------------------------------
def _fresh(
    args: argparse.Namespace, device: torch.device | None = None
) -> tuple[nn.Module, torch.optim.Optimizer, Batches]:
    device = device or torch.device("cpu")
    torch.manual_seed(0)
    train_set, _ = bench_task.data(samples=args.samples, features=args.features)
    model = bench_task.MLP(in_features=args.features).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = Batches(train_set, device, args.batch_size, shuffle=True, seed=0)
    return model, optimizer, batches


def hand_loop(args: argparse.Namespace, variant: str = "fp32") -> list[float]:
    """The least a loop can do with the same batches; returns the time at the end of each epoch.

    ``bf16``: forward and loss under CPU autocast; ``accumulate``: an optimizer step every
    ``ACCUMULATE`` batches on the mean of their losses.
    """
    model, optimizer, batches = _fresh(args)
    criterion = nn.CrossEntropyLoss()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if variant == "bf16" else contextlib.nullcontext()
    group = ACCUMULATE if variant == "accumulate" else 1
    losses: list[float] = []
    stamps = []
    model.train()
    for epoch in range(args.epochs):
        micro = 0
        for x, y in batches.epoch(epoch):
            with autocast:
                loss = criterion(model(x), y)
            losses.append(loss.item())
            (loss / group if group > 1 else loss).backward()
            micro += 1
            if micro == group:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                micro = 0
        if micro:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter())
    return stamps


def trainer_loop(args: argparse.Namespace, run_dir: Path, **options: object) -> list[float]:
    """The Trainer on the same batches with the event log a run writes; no validation or checkpoints.

    Returns the time at the end of each epoch: when its last steps' event reaches the sinks.
    """
    from tuiloop.engine.events import TrainSteps
    from tuiloop.engine.trainer import Options, Trainer
    from tuiloop.rundir.eventlog import EventLog

    model, optimizer, batches = _fresh(args)
    trainer = Trainer(
        model,
        batches,
        None,
        nn.CrossEntropyLoss(),
        optimizer,
        options=Options(epochs=args.epochs, save_best=False, save_last=False, **options),
    )  # type: ignore[arg-type]
    steps = trainer.steps_per_epoch()
    sink = EventLog(run_dir)
    trainer.subscribe(sink)
    stamps = []
    trainer.subscribe(
        lambda e: stamps.append(time.perf_counter()) if isinstance(e, TrainSteps) and e.step_in_epoch == steps else None
    )
    finished = trainer.run()
    sink.close()
    assert finished.status == "completed", finished
    return stamps


ACCUMULATE = 4
# name: (what the Trainer is given, the hand loop's variant, what it is compared with)
VARIANTS = {
    "fp32": ({}, "fp32", "hand"),
    "bf16-mixed": ({"precision": "bf16-mixed"}, "bf16", "hand"),
    "accumulate": ({"accumulate_grad_batches": ACCUMULATE}, "accumulate", "hand"),
    "grad-norm": ({"log_grad_norm": True}, "fp32", "trainer"),
}


def part2(args: argparse.Namespace) -> None:
    steps = len(_fresh(args)[2])
    print(
        f"part 2: per-step cost of training only, same fast batching (tuiloop Batches), {args.epochs} epochs x {args.rounds} rounds"
    )
    for name in args.variants:
        options, variant, against = VARIANTS[name]
        base, eng = [], []
        with tempfile.TemporaryDirectory(prefix="tuiloop-bench-") as tmp:
            for r in range(args.rounds):
                for who in ("base", "trainer") if r % 2 == 0 else ("trainer", "base"):
                    if who == "trainer":
                        stamps = trainer_loop(args, Path(tmp), **options)
                    elif against == "hand":
                        stamps = hand_loop(args, variant)
                    else:  # the same Trainer without the option: what the option itself costs
                        stamps = trainer_loop(args, Path(tmp))
                    (base if who == "base" else eng).extend(t / steps for t in steady(stamps, args.warmup))
        b, e = statistics.median(base), statistics.median(eng)
        label = "hand loop" if against == "hand" else "Trainer without it"
        print(
            f"  {name:11s} {label} {b * 1e6:7.1f} us/batch   tuiloop Trainer {e * 1e6:7.1f} us/batch   ratio {e / b:.3f} ({(e - b) * 1e6:+.1f} us/batch)",
            flush=True,
        )


# ---- part 3: on a GPU (--device cuda) --------------------------------------------------------
CUDA = torch.device("cuda")
# name: what the Trainer is given (the hand loop does the same by hand)
CUDA_VARIANTS = {
    "fp32": {},
    "bf16-mixed": {"precision": "bf16-mixed"},
    "compile": {"compile": True},
}


class SyncCount:
    """Host syncs that torch's sync debug mode reports between :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self.count = 0
        self._catcher: Any = None
        self._caught: list[warnings.WarningMessage] = []

    def start(self) -> None:
        torch.cuda.synchronize()
        self._catcher = warnings.catch_warnings(record=True)
        self._caught = self._catcher.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def stop(self) -> None:
        torch.cuda.set_sync_debug_mode(0)
        self._catcher.__exit__(None, None, None)
        self.count = sum("synchroniz" in str(w.message) for w in self._caught)


def cuda_hand_loop(
    args: argparse.Namespace, variant: str, epochs: int, counter: SyncCount | None = None
) -> list[float]:
    """The least a GPU loop can do with the same batches: no per-step ``.item()``, the epoch's
    losses read back once at its end. Returns the (synchronized) time at the end of each epoch;
    ``counter`` counts the host syncs of the last epoch."""
    model, optimizer, batches = _fresh(args, CUDA)
    step_model = torch.compile(model) if variant == "compile" else model
    criterion = nn.CrossEntropyLoss()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if variant == "bf16-mixed" else contextlib.nullcontext()
    stamps = []
    model.train()
    torch.cuda.synchronize()
    for epoch in range(epochs):
        if counter is not None and epoch == epochs - 1:
            counter.start()
        losses = []
        for x, y in batches.epoch(epoch):
            with autocast:
                loss = criterion(step_model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        torch.stack(losses).float().tolist()  # what a loop logs: one read per epoch
        if counter is not None and epoch == epochs - 1:
            counter.stop()
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    return stamps


def cuda_trainer_loop(
    args: argparse.Namespace, run_dir: Path, options: dict[str, Any], epochs: int, counter: SyncCount | None = None
) -> list[float]:
    """The Trainer on the same GPU batches with the event log a run writes; no validation or
    checkpoints. Returns the (synchronized) time at the end of each epoch's last flush;
    ``counter`` counts the host syncs of the last epoch (its flushes included)."""
    from tuiloop.engine.events import Event, TrainSteps
    from tuiloop.engine.trainer import Options, Trainer
    from tuiloop.rundir.eventlog import EventLog

    model, optimizer, batches = _fresh(args, CUDA)
    trainer = Trainer(
        model,
        batches,
        None,
        nn.CrossEntropyLoss(),
        optimizer,
        options=Options(epochs=epochs, save_best=False, save_last=False, **options),
        device=CUDA,
    )  # type: ignore[arg-type]
    steps = trainer.steps_per_epoch()
    sink = EventLog(run_dir)
    trainer.subscribe(sink)
    stamps: list[float] = []

    def at_epoch_end(e: Event) -> None:
        if not (isinstance(e, TrainSteps) and e.step_in_epoch == steps):
            return
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        if counter is not None and e.epoch == epochs - 1:  # the last epoch starts after this
            counter.start()
        elif counter is not None and e.epoch == epochs:
            counter.stop()

    trainer.subscribe(at_epoch_end)
    torch.cuda.synchronize()
    finished = trainer.run()
    sink.close()
    assert finished.status == "completed", finished
    return stamps


def part_cuda(args: argparse.Namespace) -> None:
    from tuiloop.engine.compiling import CompileError, check_compiler

    steps = len(_fresh(args, CUDA)[2])
    print(
        f"part 3 [{torch.cuda.get_device_name(CUDA)}]: MLP {args.features}-128-128-10, batch {args.batch_size} ({steps} batches/epoch), Adam, "
        f"training only, {args.epochs} epochs (first {args.warmup} intervals dropped) x {args.rounds} rounds"
    )
    for name in args.cuda_variants:
        options = CUDA_VARIANTS[name]
        if name == "compile":
            try:
                check_compiler(CUDA)
            except CompileError as e:
                print(f"  {name:11s} skipped: {e}")
                continue
        hand, eng = [], []
        with tempfile.TemporaryDirectory(prefix="tuiloop-bench-") as tmp:
            for r in range(args.rounds):
                for who in ("hand", "trainer") if r % 2 == 0 else ("trainer", "hand"):
                    if who == "trainer":
                        eng.extend(
                            t / steps
                            for t in steady(cuda_trainer_loop(args, Path(tmp), options, args.epochs), args.warmup)
                        )
                    else:
                        hand.extend(t / steps for t in steady(cuda_hand_loop(args, name, args.epochs), args.warmup))
            # one more short run each, counting the host syncs of its last (steady) epoch
            syncs_hand, syncs_eng = SyncCount(), SyncCount()
            cuda_hand_loop(args, name, args.warmup + 2, syncs_hand)
            cuda_trainer_loop(args, Path(tmp), options, args.warmup + 2, syncs_eng)
        h, e = statistics.median(hand), statistics.median(eng)
        print(
            f"  {name:11s} hand loop {h * 1e6:7.1f} us/batch ({args.batch_size / h:,.0f} samples/s)   tuiloop Trainer {e * 1e6:7.1f} us/batch ({args.batch_size / e:,.0f} samples/s)   "
            f"ratio {e / h:.3f} ({(e - h) * 1e6:+.1f} us/batch)   host syncs in a steady epoch of {steps} steps: hand {syncs_hand.count}, tuiloop {syncs_eng.count} "
            f"({syncs_eng.count / steps:.3f}/step)",
            flush=True,
        )


# ---- profiling ------------------------------------------------------------------------------
def profile(args: argparse.Namespace) -> None:
    """cProfile of what `tuiloop run --headless` executes, in this process."""
    import cProfile
    import pstats

    from tuiloop.engine.plain import PlainSink
    from tuiloop.runner.spec_run import execute
    from tuiloop.spec import load_spec

    null = open(os.devnull, "w")
    with tempfile.TemporaryDirectory(prefix="tuiloop-bench-") as tmp:
        spec = load_spec(write_spec(args, Path(tmp)), ["run.epochs=1"])
        execute(spec, sinks=[PlainSink(null)], handle_signals=False)  # imports done before profiling
    with tempfile.TemporaryDirectory(prefix="tuiloop-bench-") as tmp:
        spec = load_spec(write_spec(args, Path(tmp)))
        prof = cProfile.Profile()
        prof.enable()
        code, _ = execute(spec, sinks=[PlainSink(null)], handle_signals=False)
        prof.disable()
    assert code == 0
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(args.top)
    print("tuiloop's own functions, by cumulative time:")
    stats.sort_stats("cumulative").print_stats(r"tuiloop[/\\]", args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs per run (default 12)")
    parser.add_argument(
        "--warmup", type=int, default=2, help="epoch intervals dropped at the start of each run (default 2)"
    )
    parser.add_argument("--samples", type=int, default=4096, help="dataset size, 3/4 train (default 4096)")
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--overhead", action="store_true", help="only part 2")
    parser.add_argument("--compare", action="store_true", help="only part 1")
    parser.add_argument("--profile", action="store_true", help="profile tuiloop's headless run instead")
    parser.add_argument("--top", type=int, default=30, help="entries printed by --profile")
    parser.add_argument(
        "--paths",
        nargs="+",
        default=["fp32", "bf16", "accumulate"],
        choices=["fp32", "bf16", "accumulate"],
        help="part 1: which training paths (default: all)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        help="part 2: which training paths (default: all)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="cpu (default): parts 1 and 2; cuda: part 3 only, on the GPU",
    )
    parser.add_argument(
        "--cuda-variants",
        nargs="+",
        default=list(CUDA_VARIANTS),
        choices=list(CUDA_VARIANTS),
        help="part 3: which training paths (default: all)",
    )
    args = parser.parse_args()
    if args.warmup >= args.epochs - 1:
        parser.error("--epochs must leave at least one interval after --warmup")
    if args.device == "cuda":
        if args.compare or args.overhead or args.profile:
            parser.error("--device cuda runs part 3 alone; --compare, --overhead and --profile are CPU parts")
        if not torch.cuda.is_available():
            built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            parser.error(
                f"--device cuda needs a CUDA GPU, and torch cannot use one here (torch {torch.__version__}, {built}); run it on a GPU box, or leave --device out for the CPU parts"
            )
        print(
            f"torch {torch.__version__} (CUDA {torch.version.cuda}), {torch.cuda.get_device_name(CUDA)}, python {sys.version.split()[0]}"
        )
        part_cuda(args)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), python {sys.version.split()[0]}")
    if args.profile:
        profile(args)
        return
    if not args.overhead:
        part1(args)
    if not args.compare:
        part2(args)


if __name__ == "__main__":
    main()
