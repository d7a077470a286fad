"""Opening a day-long run: ``attach`` / ``show`` / ``ls`` on a big event log, with its saved digest and without.

A synthetic day-long run is written through the real writer (:class:`~tuiloop.rundir.eventlog.EventLog`,
which keeps the run's digest and saves ``digest.json`` every 30 s of the run's clock): 345,600
TrainSteps lines of 25 steps (8.64M steps, 4 a second), a validation with its early-stopping
update, checkpoints and a learning-rate change every 10,000 steps, and a machine sample every 2 s
(the system sampler's interval). The writer is left open, as in a live run whose monitor lost its
connection, so the newest saved digest is up to 30 s behind the end of the log. Then, median of
``--repeat`` runs each:

* monitor load: what ``attach`` does before its first frame: a :class:`~tuiloop.tui.source.RunSource`
  polled until it has nothing more, every batch applied to a :class:`~tuiloop.tui.model.MonitorModel`
  (in this process);
* ``tuiloop show RUN`` with its output piped (plain lines), and ``tuiloop ls`` of the folder, as commands;
* the same without the saved digest (the file hidden): the whole log parsed, as older runs are read;
* the writer's cost: the digest per event and one save, and the size of ``digest.json``.

It checks that the model loaded from the saved digest equals the one built from the whole log.

    python benchmarks/bench_attach.py                       # about 2 minutes
    python benchmarks/bench_attach.py --lines 34560 --repeat 3
    python benchmarks/bench_attach.py --keep /tmp/day      # leave the run directory there
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tuiloop.engine.events import (
    CheckpointSaved,
    EarlyStopUpdate,
    Event,
    LRChanged,
    RunStarted,
    Starting,
    StateChanged,
    SystemSample,
    TrainSteps,
    Validated,
)
from tuiloop.rundir.eventlog import EventLog
from tuiloop.rundir.layout import DIGEST_FILE, EVENTS, RUN_INFO


def day_events(
    lines: int, per_line: int = 25, steps_per_epoch: int = 10_000, sample_every: float = 2.0, line_s: float = 0.25
) -> Iterator[Event]:
    """A long run as the engine logs it: ``lines`` TrainSteps of ``per_line`` steps, ``line_s`` apart."""
    rng = random.Random(0)
    t = 1_700_000_000.0
    yield Starting("importing torch", time=t)
    yield RunStarted(run_name="day", run_dir="/runs/day", device="cuda:0", device_name="NVIDIA H100 80GB HBM3", epochs=1000, steps_per_epoch=steps_per_epoch,
                     batch_size=64, train_size=64 * steps_per_epoch, val_size=50_000, problem="multiclass", metrics=["train_loss", "val_loss", "val_acc"],
                     monitor="val_loss", mode="min", patience=50, num_params=124_000_000, time=t)  # fmt: skip
    yield StateChanged("running", time=t)
    gpu = {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "util": 97,
        "mem_used": 70 << 30,
        "mem_total": 80 << 30,
        "temp": 71,
        "power_w": 640.5,
    }
    best, step, lr, next_sample = math.inf, 0, 3e-4, t + sample_every
    for _ in range(lines):
        first = step + 1
        epoch = step // steps_per_epoch + 1
        losses = [round(2.0 / math.sqrt(first + k) + 0.05 * rng.random(), 4) for k in range(per_line)]
        step += per_line
        t += line_s
        yield TrainSteps(
            epoch,
            first,
            losses,
            step - (epoch - 1) * steps_per_epoch,
            lr,
            round(6400.0 + 100 * rng.random(), 1),
            time=t,
        )
        while sample_every and t >= next_sample:
            next_sample += sample_every
            yield SystemSample(
                round(30 + 10 * rng.random(), 1),
                60 << 30,
                128 << 30,
                9 << 30,
                101.0,
                68 << 30,
                [{**gpu, "util": rng.randrange(90, 100)}],
                time=t,
            )
        if step % steps_per_epoch == 0:
            val = 2.0 / math.sqrt(step) + 0.01 * rng.random()
            is_best = val < best
            best = min(best, val)
            yield Validated(
                epoch, step, {"train_loss": losses[-1], "val_loss": val, "val_acc": 1 - val}, is_best, 12.0, time=t
            )
            yield EarlyStopUpdate(epoch, "val_loss", val, best, 0 if is_best else 1, 50, False, time=t)
            if is_best:
                yield CheckpointSaved("best", "checkpoints/best.pt", epoch, step, val, "val_loss", time=t)
            yield CheckpointSaved("last", "checkpoints/last.pt", epoch, step, val, "val_loss", time=t)
            previous, lr = lr, 3e-4 * (0.5 + 0.5 * math.cos(epoch / 300))
            yield LRChanged(epoch + 1, step, lr, previous, time=t)


def write_run(run_dir: Path, args: argparse.Namespace) -> tuple[int, float]:
    """The run directory, written through the real EventLog and left open (a live run); (events, seconds)."""
    run_dir.mkdir(parents=True)
    (run_dir / RUN_INFO).write_text(json.dumps({"name": "day", "started": 1_700_000_000.0}))
    log = EventLog(run_dir)
    n, started = 0, time.perf_counter()
    for event in day_events(args.lines, sample_every=args.sample_every):
        log(event)
        n += 1
    seconds = time.perf_counter() - started
    log._file.flush()  # not close(): that would save a digest of the very end, as a finished run does
    return n, seconds


def load_model(run_dir: Path, from_digest: bool = True):  # type: ignore[no-untyped-def]
    """What attach does before its first frame: poll the source dry, applying every batch."""
    from tuiloop.tui.model import MonitorModel
    from tuiloop.tui.source import RunSource

    source = RunSource(run_dir)
    if not from_digest:
        from tuiloop.rundir.eventlog import EventTail

        source.tail = EventTail(run_dir)
    model = MonitorModel(str(run_dir))
    while batch := source.poll():
        model.apply_all(batch)
    return model


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def command(*args: str) -> Callable[[], None]:
    def run() -> None:
        r = subprocess.run(
            [sys.executable, "-m", "tuiloop", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        if r.returncode != 0:
            raise SystemExit(f"tuiloop {' '.join(args)} failed: {r.stderr}")

    return run


def same_picture(a, b) -> bool:  # type: ignore[no-untyped-def]
    """The digests dumped alike (NaN-safe), and the scalars the screen shows."""
    keys = ("step", "epoch", "epochs_done", "lr", "state", "best_value", "best_epoch", "train_time")
    dump = lambda m: json.dumps(m.digest.to_dict(), sort_keys=True)  # noqa: E731
    return (
        dump(a) == dump(b)
        and all(getattr(a, k) == getattr(b, k) for k in keys)
        and a.seconds_per_step() == b.seconds_per_step()
    )


def writer_costs(run_dir: Path) -> tuple[float, float]:
    """(us per TrainSteps taken into the digest, ms per save of the day-long run's saved digest)."""
    from tuiloop.rundir.digest import RunDigest, load_digest
    from tuiloop.rundir.digest_file import save_digest

    events = [e for e in day_events(4000, sample_every=0)]
    steps = [e for e in events if isinstance(e, TrainSteps)]
    digest = RunDigest()
    started = time.perf_counter()
    for e in events:
        digest.apply(e)
    per_event = (time.perf_counter() - started) / len(steps)
    snap = load_digest(run_dir)
    assert snap is not None
    with tempfile.TemporaryDirectory() as tmp:
        save = timed(lambda: save_digest(Path(tmp), snap, b"x\n"), 9)
    return per_event * 1e6, save * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--lines", type=int, default=345_600, help="TrainSteps lines of 25 steps (default 345,600: a day at 4 a second)"
    )
    parser.add_argument(
        "--sample-every",
        type=float,
        default=2.0,
        help="seconds between machine samples (default 2, the sampler's; 0: none)",
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="write the run directory here and leave it")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU(s)")
    tmp = None if args.keep else tempfile.mkdtemp(prefix="tuiloop-attach-")
    out = args.keep or Path(tmp)  # type: ignore[arg-type]
    run_dir = out / "day-run"
    try:
        n, seconds = write_run(run_dir, args)
        size = (run_dir / EVENTS).stat().st_size
        snap = run_dir / DIGEST_FILE
        behind = size - json.loads(snap.read_text())["offset"]
        print(f"run: {n:,} events, {size / 1e6:.1f} MB of events.jsonl (written through EventLog in {seconds:.1f} s); "
              f"digest.json {snap.stat().st_size / 1e3:.0f} kB, {behind / 1e3:.1f} kB of log after it")  # fmt: skip
        with_digest, full = load_model(run_dir), load_model(run_dir, from_digest=False)
        print(f"the model from the saved digest equals the one from the whole log: {same_picture(with_digest, full)}")
        rows = [
            ("monitor load (attach before its first frame)", lambda: load_model(run_dir)),
            ("tuiloop show RUN | cat", command("show", str(run_dir))),
            ("tuiloop ls", command("ls", str(out))),
        ]
        results = {name: timed(fn, args.repeat) for name, fn in rows}
        hidden = snap.with_name("hidden-digest.json")
        snap.rename(hidden)
        try:
            full_rows = {
                "monitor load (attach before its first frame)": lambda: load_model(run_dir),
                "tuiloop show RUN | cat": command("show", str(run_dir)),
            }
            without = {name: timed(fn, max(1, args.repeat // 2)) for name, fn in full_rows.items()}
        finally:
            hidden.rename(snap)
        print(f"  {'':<46} {'with digest.json':>16} {'without (older runs)':>21}")
        for name, _ in rows:
            other = f"{without[name]:>20.2f}s" if name in without else f"{'':>21}"
            print(f"  {name:<46} {results[name]:>15.2f}s {other}")
        per_event, save_ms = writer_costs(run_dir)
        print(f"writer: digest {per_event:.1f} us per TrainSteps event (25 steps); a save {save_ms:.1f} ms, every 30 s")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
