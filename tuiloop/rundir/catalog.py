"""Past and live runs under an output directory: find them and describe them.

Used by ``tuiloop ls``, and by ``attach``/``show`` to turn what the user typed into a run
directory. Reads only run.json, summary.json and (for runs without a summary) the event log;
never imports torch.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuiloop.engine.fmt import plural
from tuiloop.rundir.handle import owner_name
from tuiloop.rundir.layout import EVENTS, RUN_INFO, SPEC, is_run_dir
from tuiloop.rundir.liveness import frozen_for
from tuiloop.rundir.records import read_info
from tuiloop.rundir.scan import Progress, scan
from tuiloop.rundir.state import run_state
from tuiloop.spec.load import tomllib  # tomli on Python 3.10


@dataclass
class RunRow:
    """One run as ``tuiloop ls`` shows it."""

    path: Path
    state: str  # running | paused | stalled | finished | stopped | early_stopped | failed | forced | crashed
    epochs_done: int | None
    epochs: int | None
    monitor: str | None
    best: float | None
    best_epoch: int | None  # counted from 1
    started: float
    duration_s: float | None
    steps: int | None = None  # None while unknown (a run without a summary)
    problems: list[str] = field(default_factory=list)  # what of its files could not be read, skipped

    @property
    def name(self) -> str:
        return self.path.name


# ---- reading one run -----------------------------------------------------------------------
def _started(run_dir: Path, info: dict, summary: dict | None) -> float:
    for source in (info, summary or {}):
        if isinstance(source.get("started"), (int, float)):
            return float(source["started"])
    try:
        return (run_dir / RUN_INFO).stat().st_mtime
    except OSError:
        return run_dir.stat().st_mtime


def duration(
    summary: dict[str, Any] | None, progress: Progress | None = None, now: float | None = None
) -> float | None:
    """How long a run took, the one definition that ``ls`` and summary.json share: its last
    session's training, from that session's run_started event to its finished one (the time
    before it, building the data and the model, is not counted, nor earlier sessions of a
    resumed run). summary.json records it as ``wall_time_s``, the time the finish line prints; a
    run without a summary is measured the same way from its log (``progress``): to ``now`` while
    it is live, to its last event once it crashed."""
    if summary is not None:
        wall = summary.get("wall_time_s")
        return float(wall) if isinstance(wall, (int, float)) else None
    if progress is None or not isinstance(progress.session_started, (int, float)):
        return None  # not started training yet (or a log from before the session time was kept)
    end = now if now is not None else progress.last_time
    return None if end is None else max(end - progress.session_started, 0.0)


def describe(run_dir: Path, now: float | None = None) -> RunRow:
    """Everything ``ls`` shows about one run."""
    st = run_state(run_dir)
    started = _started(run_dir, st.info, st.summary)
    s = st.summary
    if s is not None:
        return RunRow(
            run_dir,
            st.state,
            s.get("epochs_done"),
            s.get("epochs") or _spec_epochs(run_dir),
            s.get("monitor"),
            s.get("best_value"),
            s.get("best_epoch"),
            started,
            duration(s),
            s.get("steps"),
            st.problems,
        )
    p = scan(run_dir)
    if st.state == "running":
        frozen = frozen_for(p.last_time, p.sampled, now or time.time())
        state = "paused" if p.paused else "stalled" if p.stalled or frozen else "running"
    else:
        state = st.state
    live_until = (now or time.time()) if st.state == "running" else None  # crashed: it ran until its last word
    return RunRow(
        run_dir,
        state,
        p.done,
        p.epochs or _spec_epochs(run_dir),
        p.monitor,
        p.best,
        p.best_epoch,
        started,
        duration(None, p, live_until),
        problems=st.problems
        + ([f"skipped {plural(p.skipped, 'line')} of {EVENTS} ({p.problems[0]})"] if p.skipped else []),
    )


def _spec_epochs(run_dir: Path) -> int | None:
    """``run.epochs`` from the saved spec (the event log may be empty for a setup failure)."""
    try:
        raw = tomllib.loads((run_dir / SPEC).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    run = raw.get("run")
    epochs = run.get("epochs", 10) if isinstance(run, dict) else None
    return epochs if isinstance(epochs, int) else None


# ---- finding runs --------------------------------------------------------------------------
def find_runs(out_dir: Path, unreadable: list[Path] | None = None) -> list[Path]:
    """Run directories directly under ``out_dir`` (or ``out_dir`` itself if it is one); folders
    this user may not look into (other users' runs) go to ``unreadable``."""
    if is_run_dir(out_dir):
        return [out_dir]
    try:
        entries = list(os.scandir(out_dir))
    except OSError:
        return []
    out = []
    for entry in entries:
        try:
            if entry.is_dir() and is_run_dir(Path(entry.path)):
                out.append(Path(entry.path))
        except PermissionError:  # another user's run: not ours to read
            if unreadable is not None:
                unreadable.append(Path(entry.path))
    return out


@dataclass
class Listing:
    """The runs under a folder, and the folders there this user may not read."""

    rows: list[RunRow]
    unreadable: list[Path]


def list_runs(out_dir: Path) -> Listing:
    """All runs under ``out_dir``, oldest first."""
    now = time.time()
    rows = []
    unreadable: list[Path] = []
    for path in find_runs(out_dir, unreadable):
        try:
            rows.append(describe(path, now))
        except PermissionError:
            unreadable.append(path)
    return Listing(sorted(rows, key=lambda r: (r.started, r.name)), unreadable)


def latest_live(out_dir: Path) -> Path | None:
    """The most recently started run under ``out_dir`` that is still live."""
    live = [p for p in find_runs(out_dir) if run_state(p).live]
    if not live:
        return None
    return max(live, key=lambda p: _started(p, read_info(p)[0], None))


class RunNotFound(Exception):
    """What the user typed names no run (or more than one), or one this user may not read."""


def not_yours(path: Path) -> str:
    """Why a run directory (or a file of one) of another user cannot be read, and what to do."""
    try:
        st = path.stat()
        owner, mode = owner_name(st.st_uid), f"mode {stat.S_IMODE(st.st_mode):04o}"
    except OSError:
        owner, mode = "another user", "its folder closed to you"
    return (
        f"permission denied: {path} belongs to {owner} ({mode}), and a run's files are private to the user who "
        f"started it; open it as that user, or ask them for a copy (cp -r) that you own"
    )


def resolve_run(text: str, out_dir: Path = Path("runs")) -> Path:
    """A run directory from a path, a run name under ``out_dir``, or a unique part of a name."""
    path = Path(text).expanduser()
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            raise RunNotFound(not_yours(path))
        if is_run_dir(path):
            return path.resolve()
        raise RunNotFound(
            f"{text} is not a tuiloop run directory (no run.json); `tuiloop ls {text}` lists the runs in it"
        )
    candidates = [p for p in find_runs(out_dir) if text in p.name] if out_dir.is_dir() and "/" not in text else []
    if len(candidates) == 1:
        return candidates[0].resolve()
    if not candidates:
        raise RunNotFound(
            f"no run directory {text!r} (nor a run under {out_dir}/ whose name contains it); `tuiloop ls` lists runs"
        )
    names = ", ".join(sorted(p.name for p in candidates)[:5])
    raise RunNotFound(
        f"{text!r} matches {len(candidates)} runs under {out_dir}/ ({names}{', ...' if len(candidates) > 5 else ''}); give more of the name"
    )
