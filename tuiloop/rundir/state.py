"""How a run stands, from its directory alone: live (its lock is held), ended (its summary), or crashed."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuiloop.rundir.layout import CONTROL, EVENTS, RUN_INFO, SUMMARY, read_json
from tuiloop.rundir.lock import is_locked

# A run on another machine (a shared filesystem) is taken as live while its log is this fresh.
REMOTE_QUIET_S = 600.0


@dataclass
class RunState:
    """What ``ls`` and ``attach`` need to know about a run without reading its events."""

    state: str  # running | finished | stopped | early_stopped | failed | forced | crashed
    info: dict[str, Any]
    summary: dict[str, Any] | None
    detail: str = ""  # why a run without a summary counts as crashed, or where a live one runs

    @property
    def live(self) -> bool:
        return self.state == "running"


def _ended(info: dict[str, Any], summary: dict[str, Any]) -> RunState:
    status = summary.get("status", "finished")
    return RunState({"completed": "finished"}.get(status, status), info, summary)


def run_state(run_dir: Path) -> RunState:
    """Classify a run: its lock held is live; else a summary says how it ended; else it crashed."""
    info = read_json(run_dir / RUN_INFO) or {}
    host = info.get("host")
    if host and host != socket.gethostname():
        summary = read_json(run_dir / SUMMARY)
        return _ended(info, summary) if summary is not None else _elsewhere(run_dir, info, host)
    if is_locked(run_dir):
        return RunState("running", info, None)
    summary = read_json(run_dir / SUMMARY)
    if summary is not None:
        return _ended(info, summary)
    pid = info.get("pid") or "?"
    stale = " and left a stale control socket" if (run_dir / CONTROL).exists() else ""
    return RunState("crashed", info, None, f"its process (pid {pid}) is gone{stale}, without writing a summary")


def _elsewhere(run_dir: Path, info: dict[str, Any], host: str) -> RunState:
    """A run on another machine: its lock may not be visible from here, so a recently written
    event log is the sign of life."""
    try:
        quiet = time.time() - (run_dir / EVENTS).stat().st_mtime
    except OSError:
        quiet = time.time() - float(info.get("started") or 0)
    if quiet < REMOTE_QUIET_S:
        return RunState("running", info, None, f"runs on {host}; its log was written {quiet:.0f}s ago")
    return RunState(
        "crashed", info, None, f"runs on {host} and has written nothing for {quiet / 60:.0f} minutes, without a summary"
    )
