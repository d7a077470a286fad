"""How far a run without a summary got, as ``tuiloop ls`` shows it, read quickly from its log.

Per-step loss lines and machine samples are nearly all of a long log: of them only the last is
parsed, and a saved digest that fits the log (:func:`~tuiloop.rundir.digest_file.read_digest_file`) says
what those before its offset added up to. The lines are read as JSON dicts, not as events: a
line this version does not understand is passed over. Without numpy (the digest's), which ``ls``
does not need.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tuiloop.engine.events import (
    CheckpointSaved,
    RunStarted,
    StateChanged,
    SystemSample,
    TrainSteps,
    Validated,
    line_prefix,
)
from tuiloop.rundir.digest_file import read_digest_file
from tuiloop.rundir.layout import EVENTS

_STEPS_PREFIX = line_prefix(TrainSteps.kind)
_SAMPLE_PREFIX = line_prefix(SystemSample.kind)


@dataclass
class Progress:
    """How far a run without a summary got, as ``ls`` shows it."""

    epochs: int | None = None
    done: int = 0  # completed epochs
    monitor: str | None = None
    best: float | None = None
    best_epoch: int | None = None  # counted from 1
    paused: bool = False
    last_time: float | None = None
    session_started: float | None = None  # the time of the latest run_started: the session that ran last


def scan(run_dir: Path) -> Progress:
    """Epochs done, best so far and pause state, from the log; of the step lines and the machine
    samples only the last is parsed. A saved digest that fits the log says where the other lines are
    before its offset, and what the rest there added up to."""
    p = Progress()
    last_steps: bytes | None = None
    last_sample: bytes | None = None
    try:
        f = open(run_dir / EVENTS, "rb")
    except OSError:
        return p
    with f:
        snap = read_digest_file(run_dir)
        if snap is not None:
            for start, end, _ in snap["ranges"]:
                f.seek(start)
                for line in f.read(end - start).splitlines():
                    _scan_line(p, line)
            digest = snap.get("digest")
            _scan_steps(
                p, digest.get("epoch") if isinstance(digest, dict) else None, snap.get("time")
            )  # the epoch of the last step, or later
            f.seek(snap["offset"])
        for line in f:
            if line.startswith(_STEPS_PREFIX):
                last_steps = line
            elif line.startswith(_SAMPLE_PREFIX):
                last_sample = line
            else:
                _scan_line(p, line)
    for last in (last_steps, last_sample):
        try:
            ev = json.loads(last) if last is not None else None
        except ValueError:
            continue
        if isinstance(ev, dict):
            _scan_steps(p, ev.get("epoch") if ev.get("event") == TrainSteps.kind else None, ev.get("time"))
    return p


def _scan_line(p: Progress, line: bytes) -> None:
    try:
        ev = json.loads(line)
    except ValueError:
        return  # a line still being written
    if not isinstance(ev, dict):
        return
    kind = ev.get("event")
    p.last_time = ev.get("time", p.last_time)
    try:
        if kind == RunStarted.kind:
            p.epochs, p.monitor, p.session_started = ev.get("epochs"), ev.get("monitor"), ev.get("time")
            p.done = max(p.done, int(ev.get("start_epoch") or 0))
        elif kind == Validated.kind:
            p.done = max(p.done, int(ev["epoch"]))
            value = (ev.get("metrics") or {}).get(p.monitor or "")
            if ev.get("is_best") and value is not None:
                p.best, p.best_epoch = value, int(ev["epoch"])
        elif kind == CheckpointSaved.kind:
            p.done = max(p.done, int(ev.get("epoch") or 0))
        elif kind == StateChanged.kind:
            p.paused = ev.get("state") == "paused"
    except (KeyError, TypeError, ValueError):
        pass  # a line this version does not understand


def _scan_steps(p: Progress, epoch: object, time: object) -> None:
    """Steps of epoch k were logged at ``time``: the epochs before k are done."""
    if isinstance(epoch, int):
        p.done = max(p.done, epoch - 1)
    if isinstance(time, (int, float)):
        p.last_time = max(p.last_time or 0.0, time)
