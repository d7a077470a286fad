"""Past and live runs under an output directory: find them, describe them, list them in a table.

Used by ``tuiloop ls``, and by ``attach``/``show`` to turn what the user typed into a run
directory. Reads only run.json, summary.json and (for runs without a summary) the event log;
never imports torch.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tuiloop import rundir


@dataclass
class RunRow:
    """One run as ``tuiloop ls`` shows it."""

    path: Path
    state: str  # running | paused | finished | stopped | early_stopped | failed | crashed
    epochs_done: int | None
    epochs: int | None
    monitor: str | None
    best: float | None
    best_epoch: int | None  # 0-based
    started: float
    duration_s: float | None

    @property
    def name(self) -> str:
        return self.path.name


# ---- reading one run -----------------------------------------------------------------------
@dataclass
class _Progress:
    epochs: int | None = None
    done: int = 0
    monitor: str | None = None
    best: float | None = None
    best_epoch: int | None = None
    paused: bool = False
    last_time: float | None = None


def _scan_events(path: Path) -> _Progress:
    """Epochs done, best so far and pause state from the event log of a run without a summary.

    Per-step lines are the bulk of a long log, so only the last of them is parsed.
    """
    p = _Progress()
    last_steps: bytes | None = None
    try:
        f = open(path, "rb")
    except OSError:
        return p
    with f:
        for line in f:
            if b'"event":"train_steps"' in line:
                last_steps = line
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue  # a line still being written
            kind = ev.get("event")
            p.last_time = ev.get("time", p.last_time)
            if kind == "run_started":
                p.epochs, p.monitor = ev.get("epochs"), ev.get("monitor")
                p.done = max(p.done, int(ev.get("start_epoch") or 0))
            elif kind == "validated":
                p.done = max(p.done, int(ev["epoch"]) + 1)
                value = (ev.get("metrics") or {}).get(p.monitor or "")
                if ev.get("is_best") and value is not None:
                    p.best, p.best_epoch = value, int(ev["epoch"])
            elif kind == "checkpoint":
                p.done = max(p.done, int(ev.get("epoch") or 0))
            elif kind == "state":
                p.paused = ev.get("state") == "paused"
    if last_steps is not None:
        try:
            ev = json.loads(last_steps)
            p.done = max(p.done, int(ev["epoch"]))  # steps of epoch k: epochs before k are done
            p.last_time = max(p.last_time or 0.0, ev.get("time") or 0.0)
        except (ValueError, KeyError, TypeError):
            pass
    return p


def _started(run_dir: Path, info: dict, summary: dict | None) -> float:
    for source in (info, summary or {}):
        if isinstance(source.get("started"), (int, float)):
            return float(source["started"])
    try:
        return (run_dir / rundir.RUN_INFO).stat().st_mtime
    except OSError:
        return run_dir.stat().st_mtime


def describe(run_dir: Path, now: float | None = None) -> RunRow:
    """Everything ``ls`` shows about one run."""
    st = rundir.run_state(run_dir)
    started = _started(run_dir, st.info, st.summary)
    s = st.summary
    if s is not None:
        spec_epochs = _spec_epochs(run_dir)
        ended = s.get("ended")
        duration = ended - started if isinstance(ended, (int, float)) else s.get("wall_time_s")
        return RunRow(run_dir, st.state, s.get("epochs_done"), spec_epochs, s.get("monitor"), s.get("best_value"), s.get("best_epoch"), started, duration)
    p = _scan_events(run_dir / rundir.EVENTS)
    state = "paused" if st.state == "running" and p.paused else st.state
    if st.state == "running":
        duration: float | None = (now or time.time()) - started
    else:  # crashed: it ran until its last word
        duration = (p.last_time - started) if p.last_time else None
    return RunRow(run_dir, state, p.done, p.epochs or _spec_epochs(run_dir), p.monitor, p.best, p.best_epoch, started, duration)


def _spec_epochs(run_dir: Path) -> int | None:
    """``run.epochs`` from the saved spec (the event log may be empty for a setup failure)."""
    from tuiloop.spec.load import tomllib  # tomli on Python 3.10

    try:
        raw = tomllib.loads((run_dir / rundir.SPEC).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    epochs = raw.get("run", {}).get("epochs", 10)
    return epochs if isinstance(epochs, int) else None


# ---- finding runs --------------------------------------------------------------------------
def find_runs(out_dir: Path) -> list[Path]:
    """Run directories directly under ``out_dir`` (or ``out_dir`` itself if it is one)."""
    if rundir.is_run_dir(out_dir):
        return [out_dir]
    try:
        entries = list(os.scandir(out_dir))
    except OSError:
        return []
    out = []
    for entry in entries:
        try:
            if entry.is_dir() and rundir.is_run_dir(Path(entry.path)):
                out.append(Path(entry.path))
        except PermissionError:
            continue  # another user's run: not ours to read
    return out


def list_runs(out_dir: Path) -> list[RunRow]:
    """All runs under ``out_dir``, oldest first."""
    now = time.time()
    rows = []
    for path in find_runs(out_dir):
        try:
            rows.append(describe(path, now))
        except PermissionError:
            continue
    return sorted(rows, key=lambda r: (r.started, r.name))


def latest_live(out_dir: Path) -> Path | None:
    """The most recently started run under ``out_dir`` that is still live."""
    live = [p for p in find_runs(out_dir) if rundir.run_state(p).live]
    if not live:
        return None
    return max(live, key=lambda p: _started(p, rundir.read_json(p / rundir.RUN_INFO) or {}, None))


class RunNotFound(Exception):
    """What the user typed names no run (or more than one)."""


def resolve_run(text: str, out_dir: Path = Path("runs")) -> Path:
    """A run directory from a path, a run name under ``out_dir``, or a unique part of a name."""
    path = Path(text).expanduser()
    if path.is_dir():
        if rundir.is_run_dir(path):
            return path.resolve()
        raise RunNotFound(f"{text} is not a tuiloop run directory (no run.json); `tuiloop ls {text}` lists the runs in it")
    candidates = [p for p in find_runs(out_dir) if text in p.name] if out_dir.is_dir() and "/" not in text else []
    if len(candidates) == 1:
        return candidates[0].resolve()
    if not candidates:
        raise RunNotFound(f"no run directory {text!r} (nor a run under {out_dir}/ whose name contains it); `tuiloop ls` lists runs")
    names = ", ".join(sorted(p.name for p in candidates)[:5])
    raise RunNotFound(f"{text!r} matches {len(candidates)} runs under {out_dir}/ ({names}{', ...' if len(candidates) > 5 else ''}); give more of the name")


# ---- the table -----------------------------------------------------------------------------
def fmt_value(value: float | None) -> str:
    """A metric in 6 characters or so."""
    if value is None:
        return "-"
    if value != value or abs(value) == float("inf"):
        return str(value)
    return f"{value:.3g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"


def fmt_duration(seconds: float | None) -> str:
    """42s, 4m05s, 2h03m, 3d04h."""
    if seconds is None or seconds < 0:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _cells(row: RunRow, with_monitor: bool, long_date: bool) -> list[str]:
    epochs = f"{row.epochs_done if row.epochs_done is not None else '?'}/{row.epochs if row.epochs is not None else '?'}"
    if row.best is None:
        best = "-"
    else:
        at = f" @{row.best_epoch + 1}" if row.best_epoch is not None else ""
        best = (f"{row.monitor} " if with_monitor and row.monitor else "") + fmt_value(row.best) + at
    started = time.strftime("%Y-%m-%d %H:%M" if long_date else "%m-%d %H:%M", time.localtime(row.started))
    return [row.name, row.state, epochs, best, fmt_duration(row.duration_s), started]


def _shorten(name: str, width: int) -> str:
    """Cut the middle of a name, keeping its unique tail (``attach``/``show`` accept any unique part)."""
    if len(name) <= width:
        return name
    if width <= 5:
        return name[:width]
    tail = min(len(name) // 2, max(4, (width - 1) // 2))
    return name[: width - 1 - tail] + "~" + name[-tail:]  # ASCII: ls output often lands in logs


def format_table(rows: list[RunRow], width: int = 80) -> str:
    """The runs as a plain-text table no wider than ``width`` (names are shortened if needed)."""
    monitors = {r.monitor for r in rows if r.best is not None}
    one_monitor = len(monitors) == 1
    best_header = f"BEST {next(iter(monitors))}" if one_monitor else "BEST"
    header = ["RUN", "STATE", "EPOCHS", best_header, "TIME", "STARTED"]
    # Try the roomiest layout first, then give up the year, then gaps, then name characters.
    for long_date, gap in ((True, 2), (False, 2), (False, 1)):
        table = [header] + [_cells(r, not one_monitor, long_date) for r in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        if sum(widths) + gap * (len(widths) - 1) <= width:
            break
    room = width - sum(widths[1:]) - gap * (len(widths) - 1)
    widths[0] = max(min(widths[0], room), 8)
    lines = []
    for line in table:
        cells = [_shorten(line[0], widths[0])] + line[1:]
        text = (" " * gap).join(c.ljust(w) if i < len(cells) - 1 else c for i, (c, w) in enumerate(zip(cells, widths)))
        lines.append(text.rstrip())
    return "\n".join(lines)
