"""``tuiloop attach`` and ``show``: looking at a run from outside its process.

Every view is rebuilt from the run directory (the event log) and commands go over the run's
control socket, so a run started in one terminal can be watched and steered from any other.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

from tuiloop.cli.say import error, some
from tuiloop.engine import fmt
from tuiloop.engine.events import Event, TrainSteps, line_prefix
from tuiloop.engine.exits import EXIT_FAILED, EXIT_USAGE
from tuiloop.engine.plain import PlainSink
from tuiloop.rundir.catalog import RunNotFound, latest_live, resolve_run
from tuiloop.rundir.eventlog import decode, read_events
from tuiloop.rundir.layout import EVENTS
from tuiloop.rundir.state import RunState, run_state
from tuiloop.tui.model import MonitorModel

EXIT_NOT_LIVE = EXIT_FAILED  # attach: the run is not live


def _when(ts: object) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if isinstance(ts, (int, float)) else "an unknown time"


def not_live_message(run_dir: Path, st: RunState) -> str:
    """Why ``attach`` cannot open this run, and what to do instead."""
    if st.state == "suspended":
        return f"{run_dir} is suspended to disk (since {_when(st.summary.get('ended') if st.summary else None)}): no process runs it.\nContinue it where it stopped with: tuiloop run --resume {run_dir}"
    if st.summary is not None:
        reason = st.summary.get("reason") or st.state
        return f"{run_dir} is not live: it ended ({st.state}: {reason}) at {_when(st.summary.get('ended'))}.\nOpen it read-only with: tuiloop show {run_dir}"
    return f"{run_dir} is not live: {st.detail} (it crashed or was killed).\nOpen what it logged with: tuiloop show {run_dir}"


def cmd_attach(args: argparse.Namespace) -> int:
    """Open the monitor, with its keys, on a live run."""
    try:
        if args.run:
            run_dir = resolve_run(args.run, args.out_dir)
        else:
            found = latest_live(args.out_dir)
            if found is None:
                error(
                    f"no live run under {args.out_dir}/; `tuiloop ls {args.out_dir}` lists the runs there, `tuiloop show RUN_DIR` opens a past one"
                )
                return EXIT_NOT_LIVE
            run_dir = found.resolve()
    except RunNotFound as e:
        error(str(e))
        return EXIT_USAGE
    st = run_state(run_dir)
    if not st.live:
        error(not_live_message(run_dir, st))
        return EXIT_NOT_LIVE
    host = st.info.get("host")
    if host and host != socket.gethostname():
        error(
            f"{run_dir} {st.detail}: its keys work only there; attach from that machine (ssh {host}, then tuiloop attach {run_dir}), or follow it read-only with tuiloop show {run_dir}"
        )
        return EXIT_NOT_LIVE
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        error(
            f"tuiloop attach needs a terminal; without one, `tuiloop ls {run_dir.parent}` shows its progress and `tuiloop show {run_dir}` prints its log"
        )
        return EXIT_USAGE
    from tuiloop.cli.monitor import monitor_run  # lazy: this module also serves `show | cat`, which needs no textual

    return monitor_run(run_dir, None, attached=True)


def cmd_show(args: argparse.Namespace) -> int:
    """Open a run read-only; without a terminal, print its log as plain lines."""
    try:
        run_dir = resolve_run(args.run, args.out_dir)
    except RunNotFound as e:
        error(str(e))
        return EXIT_USAGE
    if not sys.stdout.isatty():
        return print_log(run_dir)
    from tuiloop.cli.monitor import monitor_run  # lazy: keeps textual out of `show | cat`

    return monitor_run(run_dir, None, read_only=True)


def print_log(run_dir: Path) -> int:
    """The run's event log as the plain lines a headless run prints, then how it stands."""
    sink = PlainSink(sys.stdout, strict=True)
    # the saved series stand for the step lines and machine samples before them (print_system
    # takes its digest); per-step lines print nothing here, so none is read
    events, tail = read_events(run_dir, from_digest=True, skip=("train_steps",))
    for event in events:
        if event.kind != "digest_loaded":
            sink(event)
    sink.close()
    print_system(events)
    print_throughput(run_dir)
    if tail.skipped:
        print(
            f"tuiloop: warning: skipped {tail.skipped} line(s) of {run_dir / 'events.jsonl'} this version cannot read: {'; '.join(tail.problems[:3])}",
            file=sys.stderr,
        )
    st = run_state(run_dir)
    if st.problems:
        print(f"tuiloop: warning: skipped what cannot be read of {run_dir}: {some(st.problems)}", file=sys.stderr)
    if st.state == "crashed":
        print(f"crashed: {st.detail}")
    elif st.live:
        print(f"still running: `tuiloop attach {run_dir}` follows it live")
    elif st.state == "suspended":
        print(f"suspended to disk: `tuiloop run --resume {run_dir}` continues it where it stopped")
    return 0


def print_system(events: list[Event]) -> None:
    """The machine's load over the run, from its SystemSample events: peak GPU memory and mean
    utilisation per GPU, peak RSS, mean CPU, torch's peak (nothing if none was sampled)."""
    model = MonitorModel()
    model.apply_all([e for e in events if e.kind in ("system_sample", "digest_loaded")])
    for line in system_summary(model):
        print(f"system: {line}")


def print_throughput(run_dir: Path) -> None:
    """The throughput of the run's last logged steps: samples/s, and tokens/s for token sequences."""
    last = last_train_steps(run_dir)
    if last is not None and last.samples_per_s > 0:
        tokens = f", {last.tokens_per_s:,.0f} tokens/s" if last.tokens_per_s is not None else ""
        print(f"throughput: {last.samples_per_s:,.0f} samples/s{tokens} (the last logged steps)")


def last_train_steps(run_dir: Path, tail: int = 1 << 18) -> TrainSteps | None:
    """The log's last ``train_steps`` event, read from its end (the same with or without a saved digest)."""
    try:
        with open(run_dir / EVENTS, "rb") as f:
            f.seek(max(f.seek(0, 2) - tail, 0))
            lines = f.read().splitlines()
    except OSError:
        return None
    prefix = line_prefix(TrainSteps.kind)
    for line in reversed(lines):
        if line.startswith(prefix):
            try:
                ev = decode(line)
            except ValueError:
                continue
            if isinstance(ev, TrainSteps):
                return ev
    return None


def system_summary(model: MonitorModel) -> list[str]:
    """The machine's load over the run, as ``show`` prints it: one line per GPU, then the host."""
    if not model.system_samples:
        return []
    gib = lambda n: f"{n / 2**30:.1f}"  # noqa: E731
    lines = []
    for g in model.gpus.values():
        util = f", mean util {g.mean_util:.0f}%" if g.mean_util is not None else ""
        lines.append(f"GPU{g.index} {g.name}: peak memory {gib(g.mem_peak)}/{gib(g.mem_total)} GiB{util}")
    torch_peak = f", torch peak {gib(model.torch_peak)} GiB" if model.torch_peak is not None else ""
    samples = fmt.plural(model.system_samples, "sample")
    lines.append(
        f"peak RSS {gib(model.rss_peak)} GiB, mean CPU {model.cpu_sum / model.system_samples:.0f}%{torch_peak} ({samples})"
    )
    return lines
