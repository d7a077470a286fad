"""The live monitor's costs: frame time against run length, and its cost to training.

Part 1 (``--frames``) fills the monitor's model with 1e3, 1e5 and 1e6 logged training steps
(in batches of 100, as the engine flushes them, with a validation every 100 steps) and times:

* ingest: applying the events to the view model, per step;
* view:   one frame's content, built without Textual: both plots drawn by plotext at their
          on-screen sizes plus every text panel (what a redraw computes);
* frame:  a whole Textual frame in ``App.run_test()`` at 120x40: the redraw plus Textual's
          layout, compositing and output (``_redraw(force=True)`` then ``pilot.pause()``), as CPU time
          of the process (the pause's idle wait is not counted).

Part 3 (``--idle``) pauses a real run from its monitor (tmux, 120x40) and measures the monitor
process's CPU time while nothing happens: an idle monitor must cost under 2% of a core.

Part 2 (``--training``) trains bench_engine's small-MLP workload (the same spec it uses) with
``tuiloop run SPEC --headless`` and with ``tuiloop run SPEC --exit-on-finish`` in a real
terminal (tmux, 120x40, the live monitor drawing), alternating, several rounds; epoch times
come from each run's own events.jsonl (the intervals between validations). It prints the
medians and live/headless.

    python benchmarks/bench_render.py                 # both parts
    python benchmarks/bench_render.py --frames
    python benchmarks/bench_render.py --training --rounds 5 --epochs 12
    python benchmarks/bench_render.py --idle --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tuiloop.engine.events import (  # noqa: E402
    CheckpointSaved,
    EarlyStopUpdate,
    Event,
    RunStarted,
    SystemSample,
    TrainSteps,
    Validated,
)

SIZES = (1_000, 100_000, 1_000_000)
SPE = 100  # steps per epoch in the synthetic run


# ---- part 1: frame time against run length ---------------------------------------------------
def synthetic_events(steps: int) -> list[Event]:
    """A run of ``steps`` steps: 100 per TrainSteps event and per epoch, a validation each epoch."""
    epochs = steps // SPE
    t = 1_700_000_000.0
    out: list[Event] = [
        RunStarted(
            run_name="bench",
            run_dir="/runs/bench",
            device="cpu",
            device_name="cpu",
            epochs=epochs,
            steps_per_epoch=SPE,
            batch_size=32,
            train_size=3200,
            val_size=800,
            problem="multiclass",
            metrics=["train_loss", "val_loss", "val_acc"],
            monitor="val_loss",
            mode="min",
            patience=50,
            num_params=26_000,
            time=t,
        )
    ]
    best = math.inf
    for e in range(1, epochs + 1):
        first = (e - 1) * SPE + 1
        losses = [2.0 / math.sqrt(first + i) + 0.05 * math.sin(first + i) for i in range(SPE)]
        t += 1.0
        out.append(
            TrainSteps(
                e,
                first,
                losses,
                SPE,
                1e-3 * (0.5 + 0.5 * math.cos(e / 50)),
                3200.0,
                grad_norms=[1.0 + 0.5 * math.sin(x) for x in losses],
                time=t,
            )
        )
        val = 2.0 / math.sqrt(first + SPE) + 0.02 * math.sin(e / 3)
        is_best = val < best
        best = min(best, val)
        out.append(
            Validated(
                e,
                first + SPE - 1,
                {"train_loss": losses[-1], "val_loss": val, "val_acc": 1 - val},
                is_best,
                0.01,
                time=t,
            )
        )
        out.append(EarlyStopUpdate(e, "val_loss", val, best, 0 if is_best else 1, 50, False, time=t))
        out.append(CheckpointSaved("last", "checkpoints/last.pt", e, first + SPE - 1, val, "val_loss", time=t))
        if e % 2 == 0:  # the system pane: two GPUs sampled every 2 s
            gpus = [
                {
                    "index": i,
                    "name": "NVIDIA H100 80GB HBM3",
                    "util": 90 + i,
                    "mem_used": 60 << 30,
                    "mem_total": 80 << 30,
                    "temp": 60,
                    "power_w": 300.0,
                }
                for i in range(2)
            ]
            out.append(SystemSample(25.0, 40 << 30, 128 << 30, 6 << 30, 100.0, 50 << 30, gpus, time=t))
    return out


class _Preloaded:
    """An event source holding the whole synthetic run (the monitor reads it at once)."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events

    def poll(self) -> list[Event]:
        out, self.events = self.events, []
        return out

    def alive(self) -> bool:
        return True

    def exit_code(self) -> int | None:
        return None

    def problems(self) -> list[str]:
        return []

    def follow(self, proc: object) -> None:
        pass


def view_frame(model, plot_w: int = 70, plot_h: int = 20) -> None:  # type: ignore[no-untyped-def]
    """What one redraw computes at 120x40: both plots and every panel."""
    from tuiloop.tui import panels
    from tuiloop.tui.figures import loss_figure, lr_figure
    from tuiloop.tui.plot import render_figure

    now = time.time()
    render_figure(loss_figure(model, plot_w), plot_w, plot_h)
    render_figure(lr_figure(model, 40), 40, 8)
    panels.title_text(model, 120)
    panels.progress_text(model, now, 118)
    panels.metrics_text(model, 40)
    panels.early_stop_text(model, 40)
    panels.lr_text(model, 40)
    panels.log_since(model, max(model.log_count - 8, 0))
    panels.health_text(model, 70)
    panels.system_text(model, 40)


async def textual_frames(steps: int, frames: int) -> list[float]:
    from tuiloop.tui.app import MonitorApp

    source = _Preloaded(synthetic_events(steps))
    count = len(source.events)
    app = MonitorApp(source, None, read_only=True)
    async with app.run_test(size=(120, 40)) as pilot:
        while app.model.events_seen < count:
            await pilot.pause(0.05)
        await pilot.pause(0.3)
        gc.collect()  # the events are read and gone, as in a live monitor
        times = []
        for _ in range(frames):
            app.model.version += 1  # as if new steps came in: everything is drawn again
            app.model.plot_version += 1
            started = time.process_time()  # CPU time: pilot.pause() also idles ~20 ms, which is not work
            app._redraw(force=True)
            await pilot.pause()
            times.append(time.process_time() - started)
    return times


def frames_part(args: argparse.Namespace) -> None:
    from tuiloop.tui.model import MonitorModel

    print("part 1: frame time against run length (120x40 terminal; plots 70x20 and 40x8)")
    print(
        f"  {'steps':>9}  {'events':>7}  {'ingest us/step':>14}  {'view ms':>8}  {'Textual frame ms CPU':>20}  {'buckets':>7}"
    )
    for steps in SIZES:
        events = synthetic_events(steps)
        model = MonitorModel()
        started = time.perf_counter()
        model.apply_all(events)
        ingest = (time.perf_counter() - started) / steps
        view_frame(model)  # warm-up (plotext's first call loads its kernel)
        views = []
        for _ in range(args.frames):
            t0 = time.perf_counter()
            view_frame(model)
            views.append(time.perf_counter() - t0)
        count = len(events)
        del events
        gc.collect()
        frames = asyncio.run(textual_frames(steps, args.frames))
        print(
            f"  {steps:>9,}  {count:>7,}  {ingest * 1e6:>14.2f}  {statistics.median(views) * 1e3:>8.2f}  {statistics.median(frames) * 1e3:>20.2f}  {len(model.train.xs):>7}",
            flush=True,
        )


# ---- part 2: the monitor's cost to training ------------------------------------------------------
def epoch_times(run_dir: Path, warmup: int) -> list[float]:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    finished = events[-1]
    if finished.get("event") != "finished" or finished.get("status") != "completed":
        raise SystemExit(f"the run did not complete: {finished}")
    stamps = [e["time"] for e in events if e["event"] == "validated"]
    return [b - a for a, b in zip(stamps[:-1], stamps[1:], strict=True)][warmup:]


def run_headless(spec: Path, workdir: Path, env: dict[str, str]) -> Path:
    subprocess.run(
        [sys.executable, "-m", "tuiloop", "run", str(spec), "--headless"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        cwd=workdir,
    )
    (run_dir,) = (workdir / "runs").iterdir()
    return run_dir


def run_live(spec: Path, workdir: Path, env: dict[str, str]) -> Path:
    """``tuiloop run SPEC --exit-on-finish`` in a 120x40 tmux terminal, the monitor drawing all along."""
    sock = f"tuiloop-bench-{uuid.uuid4().hex[:8]}"
    envs = " ".join(
        f"{k}={v}" for k, v in (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("TERM", "xterm-256color"))
    )
    cmd = f'env {envs} {sys.executable} -m tuiloop run {spec} --exit-on-finish; echo "[exit $?]"; sleep 600'
    subprocess.run(
        ["tmux", "-L", sock, "new-session", "-d", "-x", "120", "-y", "40", "-c", str(workdir), cmd], check=True, env=env
    )
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            pane = subprocess.run(["tmux", "-L", sock, "capture-pane", "-p"], capture_output=True, text=True).stdout
            if "[exit " in pane:
                if "[exit 0]" not in pane:
                    raise SystemExit(f"the live run failed:\n{pane}")
                break
            time.sleep(0.5)
        else:
            raise SystemExit("the live run did not finish in 15 minutes")
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)
    (run_dir,) = (workdir / "runs").iterdir()
    return run_dir


def training_part(args: argparse.Namespace) -> None:
    import bench_engine  # the engine benchmark's workload and spec (imports torch)

    if shutil.which("tmux") is None:
        print("part 2: skipped (needs tmux)")
        return
    steps = -(-int(args.samples * 0.75) // args.batch_size)
    print(
        f"part 2: the monitor's cost to training: bench_engine's MLP workload ({steps} steps/epoch, batch {args.batch_size}, 1 CPU thread), "
        f"{args.epochs} epochs per run (first {args.warmup} intervals dropped), {args.rounds} rounds"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    headless_all, live_all, ratios = [], [], []
    for r in range(args.rounds):
        order = ("headless", "live") if r % 2 == 0 else ("live", "headless")
        med = {}
        for how in order:
            with tempfile.TemporaryDirectory(prefix="tuiloop-bench-") as tmp:
                workdir = Path(tmp)
                spec = bench_engine.write_spec(args, workdir)
                run_dir = (run_headless if how == "headless" else run_live)(spec, workdir, env)
                times = epoch_times(run_dir, args.warmup)
            (headless_all if how == "headless" else live_all).extend(times)
            med[how] = statistics.median(times)
        ratios.append(med["live"] / med["headless"])
        print(
            f"  round {r + 1}: headless {med['headless'] * 1e3:7.1f} ms/epoch   live monitor {med['live'] * 1e3:7.1f} ms/epoch   ratio {ratios[-1]:.3f}",
            flush=True,
        )
    h, v = statistics.median(headless_all), statistics.median(live_all)
    print(f"  median over all steady epochs: headless {h * 1e3:.1f} ms   live monitor {v * 1e3:.1f} ms")
    print(
        f"  ratio live/headless: {v / h:.3f} (median of per-round ratios {statistics.median(ratios):.3f}; target <= 1.05)"
    )


# ---- part 3: an idle monitor --------------------------------------------------------------------
def _tmux(sock: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True).stdout


def _wait_screen(sock: str, needle: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while needle not in _tmux(sock, "capture-pane", "-p"):
        if time.monotonic() > deadline:
            raise SystemExit(f"{needle!r} never showed:\n{_tmux(sock, 'capture-pane', '-p')}")
        time.sleep(0.2)


def idle_part(args: argparse.Namespace) -> None:
    """A real run paused from its monitor (tmux, 120x40): the monitor process's CPU over a while."""
    import bench_engine
    import psutil

    if shutil.which("tmux") is None:
        print("part 3: skipped (needs tmux)")
        return
    print(
        f"part 3: an idle monitor: a real run paused with p, the monitor's CPU time over {args.idle_s:.0f} s, {args.rounds} rounds"
    )
    shares = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="tuiloop-bench-") as tmp:
            workdir = Path(tmp)
            spec = bench_engine.write_spec(argparse.Namespace(**{**vars(args), "epochs": 100_000}), workdir)
            sock = f"tuiloop-bench-{uuid.uuid4().hex[:8]}"
            cmd = f"env OMP_NUM_THREADS=1 TERM=xterm-256color {sys.executable} -m tuiloop run {spec}; sleep 600"
            subprocess.run(
                ["tmux", "-L", sock, "new-session", "-d", "-x", "120", "-y", "40", "-c", str(workdir), cmd], check=True
            )
            try:
                _wait_screen(sock, "val_acc")
                _tmux(sock, "send-keys", "p")
                _wait_screen(sock, "PAUSED")
                time.sleep(2.0)  # the pause settles: the last frames are drawn
                shell = psutil.Process(int(_tmux(sock, "display-message", "-p", "#{pane_pid}").strip()))
                (monitor,) = [
                    p
                    for p in shell.children(recursive=True)
                    if " run " in " ".join(p.cmdline()) and "tuiloop" in " ".join(p.cmdline())
                ]
                before, t0 = monitor.cpu_times(), time.monotonic()
                time.sleep(args.idle_s)
                after, t1 = monitor.cpu_times(), time.monotonic()
                share = (after.user + after.system - before.user - before.system) / (t1 - t0)
                shares.append(share)
                print(
                    f"  round {r + 1}: the monitor used {share * 100:.2f}% of a core while the run was paused",
                    flush=True,
                )
            finally:
                _tmux(sock, "send-keys", "C-c")
                time.sleep(1.0)
                _tmux(sock, "send-keys", "C-c")
                time.sleep(1.0)
                _tmux(sock, "kill-server")
    print(f"  median: {statistics.median(shares) * 100:.2f}% of a core (target < 2%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", dest="only_frames", action="store_true", help="only part 1")
    parser.add_argument("--training", dest="only_training", action="store_true", help="only part 2")
    parser.add_argument("--idle", dest="only_idle", action="store_true", help="only part 3")
    parser.add_argument(
        "--idle-seconds",
        dest="idle_s",
        type=float,
        default=30.0,
        help="how long part 3 measures each round (default 30)",
    )
    parser.add_argument(
        "--frame-count", dest="frames", type=int, default=30, help="frames timed per run length (default 30)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds in part 2 (default 3)")
    parser.add_argument(
        "--epochs",
        type=int,
        default=100,
        help="epochs per run in part 2 (default 100: long enough for the monitor to draw all along)",
    )
    parser.add_argument(
        "--warmup", type=int, default=5, help="epoch intervals dropped at the start of each run (default 5)"
    )
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU(s)")
    only = args.only_frames or args.only_training or args.only_idle
    if args.only_frames or not only:
        frames_part(args)
    if args.only_training or not only:
        training_part(args)
    if args.only_idle or not only:
        idle_part(args)


if __name__ == "__main__":
    main()
