"""``tuiloop status RUN [--json]``: how one run stands, for a person or a script.

The figures are the monitor's (a :class:`~tuiloop.tui.model.MonitorModel` fed with the run's event
log, from its saved digest), and the state is ``ls``'s (:func:`~tuiloop.rundir.state.run_state`,
with ``paused`` from the log). ``--json`` prints one object whose fields are documented in
docs/commands.md and only ever gain new ones (:data:`STATUS_VERSION` counts incompatible changes).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from tuiloop.cli.say import error
from tuiloop.engine import fmt
from tuiloop.engine.exits import EXIT_USAGE
from tuiloop.rundir.catalog import RunNotFound, describe, resolve_run
from tuiloop.rundir.eventlog import read_events
from tuiloop.rundir.state import run_state
from tuiloop.tui.model import MonitorModel

STATUS_VERSION = 1


def read_model(run_dir: Path) -> MonitorModel:
    """The monitor's model of the run, from its whole log (the saved digest stands for the steps before it)."""
    events, _ = read_events(run_dir, from_digest=True, skip=("system_sample",))
    model = MonitorModel(str(run_dir))
    model.apply_all(events)
    return model


def _number(v: float | None) -> float | None:
    return v if v is None or math.isfinite(v) else None  # JSON has no NaN


def status_of(run_dir: Path, now: float | None = None) -> dict[str, Any]:
    """The stable status object of ``tuiloop status --json`` (docs/commands.md lists its fields)."""
    now = time.time() if now is None else now
    st = run_state(run_dir)
    model = read_model(run_dir)
    started = model.started
    last_step = model.step_times.last
    last_check = model.epoch_rows[-1] if model.epoch_rows else None
    summary = st.summary or {}
    epochs = started.epochs if started is not None else summary.get("epochs")
    steps_per_epoch = started.steps_per_epoch if started is not None else None
    live = st.live
    phase = ("stopping" if model.state == "stopping" else model.phase) if live else None
    return {
        "version": STATUS_VERSION,
        "run_dir": str(run_dir),
        "name": run_dir.name,
        "state": describe(run_dir, now).state,  # ls's word: paused, stalled (also a frozen process), ...
        "live": live,
        "phase": phase,
        "reason": summary.get("reason") if st.summary is not None else (st.detail or None),
        "epoch": model.epoch if started is not None else None,
        "epochs_done": summary.get("epochs_done", model.epochs_done),
        "epochs": epochs,
        "step": summary.get("steps", model.step),
        "steps_per_epoch": steps_per_epoch,
        "steps_total": model.total_steps,
        "lr": _number(model.lr),
        "monitor": started.monitor if started is not None else summary.get("monitor"),
        "best": _number(model.best_value if model.best_value is not None else summary.get("best_value")),
        "best_epoch": model.best_epoch if model.best_value is not None else summary.get("best_epoch"),
        "last": {k: _number(v) for k, v in last_check.metrics.items()} if last_check else None,
        "last_epoch": last_check.epoch if last_check else None,
        "metrics": {
            name: {"last": _number(m.last), "best": _number(m.best), "best_epoch": m.best_epoch}
            for name, m in model.metrics.items()
        },
        "eta_s": model.eta(now) if live else None,
        "last_step_time": last_step[1] if last_step else None,
        "since_last_step_s": max(now - last_step[1], 0.0) if last_step and live else None,
        "pid": st.info.get("pid"),
        "host": st.info.get("host"),
        "started": st.info.get("started"),
        "ended": summary.get("ended"),
        "commands": list(started.commands) if started is not None and started.commands is not None else None,
    }


def format_status(s: dict[str, Any]) -> str:
    """The status object as a few lines for a person."""
    state = s["state"] + (f" ({s['phase']})" if s["phase"] else "")
    lines = [f"{s['name']}: {state}" + (f": {s['reason']}" if s["reason"] and not s["live"] else "")]
    epochs = s["epochs"] if s["epochs"] is not None else "?"
    total = f"/{s['steps_total']}" if s["steps_total"] else ""
    lines.append(f"  epoch {s['epoch'] or s['epochs_done']}/{epochs}, step {s['step']}{total}, lr {fmt.lr(s['lr'])}")
    if s["last"]:
        last = "  ".join(f"{k} {fmt.value(v)}" for k, v in s["last"].items())
        lines.append(f"  last (epoch {s['last_epoch']}): {last}")
    if s["best"] is not None:
        lines.append(f"  best {s['monitor']} {fmt.value(s['best'])} @ epoch {s['best_epoch']}")
    if s["live"]:
        since = fmt.duration(s["since_last_step_s"]) + " ago" if s["since_last_step_s"] is not None else "none yet"
        lines.append(f"  ETA {fmt.duration(s['eta_s'])}, last step {since}")
    lines.append(f"  pid {s['pid'] or '?'} on {s['host'] or '?'}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    """Print how one run stands (``--json``: the status object)."""
    try:
        run_dir = resolve_run(args.run, args.out_dir)
    except RunNotFound as e:
        error(str(e))
        return EXIT_USAGE
    s = status_of(run_dir)
    print(json.dumps(s, indent=2) if args.json else format_status(s))
    return 0
