"""How far a run without a summary got, as ``tuiloop ls`` shows it, read quickly from its log.

Per-step loss lines and machine samples are nearly all of a long log: of them only the last is
parsed, and a saved digest that fits the log (:func:`~tuiloop.rundir.digest_file.read_digest_file`) says
what those before its offset added up to. A line that cannot be read (damaged, or of a newer
tuiloop) is skipped and counted, as the other readers of the log do. Without numpy (the
digest's), which ``ls`` does not need.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tuiloop.engine.events import (
    CheckpointSaved,
    Event,
    RunStarted,
    SettingChanged,
    Stalled,
    StateChanged,
    SystemSample,
    TrainSteps,
    Validated,
    event_from_dict,
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
    stalled: bool = False  # the run's stall watch said so, and no state event came since
    sampled: bool = False  # the log holds machine samples (written every 2 s while the process runs)
    last_time: float | None = None
    session_started: float | None = None  # the time of the latest run_started: the session that ran last
    skipped: int = 0  # whole lines of the log that could not be read
    problems: list[str] = field(default_factory=list)  # why (the first few)

    def skip(self, why: str) -> None:
        self.skipped += 1
        if len(self.problems) < 3:
            self.problems.append(why)

    step: int = 0  # the last optimizer step logged


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
                for line in f.read(end - start).splitlines(keepends=True):
                    _scan_line(p, line)
            digest = snap.get("digest")
            digest = digest if isinstance(digest, dict) else {}
            _scan_steps(p, digest.get("epoch"), snap.get("time"), digest.get("step"))  # the last step's epoch, or later
            f.seek(snap["offset"])
        for line in f:
            if line.startswith(_STEPS_PREFIX):
                last_steps = line
            elif line.startswith(_SAMPLE_PREFIX):
                last_sample = line
            else:
                _scan_line(p, line)
    p.sampled = last_sample is not None
    for last in (last_steps, last_sample):
        ev = _decode(p, last) if last is not None else None
        if isinstance(ev, TrainSteps):
            _scan_steps(p, ev.epoch, ev.time, ev.first_step + len(ev.losses) - 1)
        elif ev is not None:
            _scan_steps(p, None, ev.time)
    return p


def _decode(p: Progress, line: bytes) -> Event | None:
    """The event on ``line``, type-checked; None, counted and told in ``p``, if it cannot be
    read (a last line still being written, without its newline, is only waited for)."""
    try:
        d = json.loads(line)
    except RecursionError:
        why = "a line nested too deeply to read"
    except ValueError:
        why = "a line that is not JSON"
    else:
        try:
            if not isinstance(d, dict):
                raise ValueError(f"a JSON {type(d).__name__}, not an object")
            return event_from_dict(d)
        except ValueError as e:
            why = str(e)
    if line.endswith(b"\n") and line.strip():
        p.skip(why)
    return None


def _scan_line(p: Progress, line: bytes) -> None:
    ev = _decode(p, line)
    if ev is None:
        return
    p.last_time = ev.time
    if isinstance(ev, RunStarted):
        p.epochs, p.monitor, p.session_started = ev.epochs, ev.monitor, ev.time
        p.done = max(p.done, ev.start_epoch)
    elif isinstance(ev, Validated):
        p.done = max(p.done, ev.epoch)
        value = ev.metrics.get(p.monitor or "")
        if ev.is_best and value is not None:
            p.best, p.best_epoch = value, ev.epoch
    elif isinstance(ev, CheckpointSaved) and ev.tag == "periodic":  # others may come mid-epoch (s, a stop)
        p.done = max(p.done, ev.epoch)
    elif isinstance(ev, StateChanged):
        p.paused, p.stalled = ev.state == "paused", False
    elif isinstance(ev, Stalled):
        p.stalled = True
    elif isinstance(ev, SettingChanged) and ev.key == "run.epochs" and isinstance(ev.new, int):  # ctl set
        p.epochs = ev.new


def _scan_steps(p: Progress, epoch: object, time: object, step: object = None) -> None:
    """Steps of epoch k, up to ``step``, were logged at ``time``: the epochs before k are done."""
    if isinstance(step, int):
        p.step = max(p.step, step)
    if isinstance(epoch, int):
        p.done = max(p.done, epoch - 1)
    if isinstance(time, (int, float)):
        p.last_time = max(p.last_time or 0.0, time)
