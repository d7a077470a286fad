"""How a run stands, from its directory alone: live (its lock is held), ended (its summary, or
the event log's last ``finished`` line when summary.json could not be written), or crashed."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuiloop.engine.events import Finished, RunStarted, event_from_dict, line_prefix
from tuiloop.rundir.layout import CONTROL, EVENTS
from tuiloop.rundir.lock import is_locked
from tuiloop.rundir.records import read_info, read_summary

# A run on another machine (a shared filesystem) is taken as live while its log is this fresh.
REMOTE_QUIET_S = 600.0
ENDING_TAIL = 64 << 10  # bytes at the log's end where its last session's finished line is looked for


@dataclass
class RunState:
    """What ``ls`` and ``attach`` need to know about a run without reading its events."""

    state: str  # running | finished | stopped | early_stopped | failed | forced | crashed
    info: dict[str, Any]
    summary: dict[str, Any] | None
    detail: str = ""  # why a run without a summary counts as crashed, or where a live one runs
    problems: list[str] = field(default_factory=list)  # what of run.json and summary.json could not be read

    @property
    def live(self) -> bool:
        return self.state == "running"


def _ended(info: dict[str, Any], summary: dict[str, Any]) -> RunState:
    status = summary.get("status", "finished")
    return RunState({"completed": "finished"}.get(status, status), info, summary)


def run_state(run_dir: Path) -> RunState:
    """Classify a run: its lock held is live; else a summary says how it ended; else it crashed.
    What cannot be read of run.json or summary.json is left out and listed in ``problems``."""
    info, problems = read_info(run_dir)
    host = info.get("host")
    if host and host != socket.gethostname():
        summary, more = read_summary(run_dir)
        st = _ended(info, summary) if summary is not None else _elsewhere(run_dir, info, host)
        st.problems = problems + more
        return st
    if is_locked(run_dir):
        return RunState("running", info, None, problems=problems)
    summary, more = read_summary(run_dir)
    problems += more
    if summary is not None:
        st = _ended(info, summary)
        st.problems = problems
        return st
    ended = logged_ending(run_dir)
    if ended is not None:  # the end was logged, and then summary.json could not be written (a full disk)
        why = more[0] if more else "it could not be written"
        return RunState(
            _ended(info, {"status": ended}).state, info, None, f"from its event log: no summary.json ({why})", problems
        )
    pid = info.get("pid") or "?"
    stale = " and left a stale control socket" if (run_dir / CONTROL).exists() else ""
    unread = f" (its summary.json cannot be read: {more[0]})" if more else ""
    return RunState(
        "crashed", info, None, f"its process (pid {pid}) is gone{stale}, without writing a summary{unread}", problems
    )


def logged_ending(run_dir: Path) -> str | None:
    """The status of the event log's last ``finished`` line, if no session started after it."""
    try:
        with open(run_dir / EVENTS, "rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - ENDING_TAIL, 0))
            tail = f.read()
    except OSError:
        return None
    finished, started = line_prefix(Finished.kind), line_prefix(RunStarted.kind)
    for line in reversed(tail.splitlines()):
        if line.startswith(started):
            return None
        if line.startswith(finished):
            try:
                ev = event_from_dict(json.loads(line))
            except (ValueError, RecursionError):
                return None
            return ev.status if isinstance(ev, Finished) else None
    return None


def _elsewhere(run_dir: Path, info: dict[str, Any], host: str) -> RunState:
    """A run on another machine: its lock may not be visible from here, so a recently written
    event log is the sign of life."""
    try:
        quiet = time.time() - (run_dir / EVENTS).stat().st_mtime
    except OSError:
        quiet = time.time() - float(info.get("started") or 0)  # checked: a number or absent
    if quiet < REMOTE_QUIET_S:
        return RunState("running", info, None, f"runs on {host}; its log was written {quiet:.0f}s ago")
    return RunState(
        "crashed", info, None, f"runs on {host} and has written nothing for {quiet / 60:.0f} minutes, without a summary"
    )
