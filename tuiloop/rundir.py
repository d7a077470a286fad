"""The run directory: the durable truth every view is rebuilt from.

Layout of ``<out_dir>/<name>-<YYYYmmdd-HHMMSS>-<4 hex>/``::

    spec.toml          the resolved spec (after --set overrides)
    run.json           who runs it: pid, host, start time, command line, versions
    events.jsonl       append-only event log, one JSON object per line
    checkpoints/       best.pt, last.pt, epoch-NNNN.pt, manual-stepNNNNNN.pt
    summary.json       written once when the run ends (absent while live or after a crash)
    control.sock       the live run's command socket (owner-only), gone when it ends
    output.log         stdout/stderr of a run started in the background
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuiloop.engine.events import Event, event_from_json
from tuiloop.procs import pid_alive, process_start

SPEC = "spec.toml"
RUN_INFO = "run.json"
EVENTS = "events.jsonl"
SUMMARY = "summary.json"
CONTROL = "control.sock"
OUTPUT = "output.log"
CHECKPOINTS = "checkpoints"


def create_run_dir(out_dir: Path, name: str) -> Path:
    """Make a fresh, uniquely named run directory (owner-only permissions)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        path = out_dir / f"{name}-{stamp}-{secrets.token_hex(2)}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        (path / CHECKPOINTS).mkdir(mode=0o700)
        return path


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temp file and ``os.replace`` so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, allow_nan=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """Read a JSON file, or None if it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class EventTail:
    """Reads ``events.jsonl`` incrementally: each ``poll()`` returns the events appended since.

    A line still being written (no trailing newline yet) is kept for the next poll.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def poll(self, max_bytes: int = 64 << 20) -> list[Event]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read(max_bytes)
        except FileNotFoundError:
            return []
        if not chunk:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            if line.strip():
                ev = event_from_json(line.decode("utf-8", errors="replace"))
                if ev is not None:
                    events.append(ev)
        return events


def read_events(run_dir: Path) -> list[Event]:
    """All events of a run, in order."""
    tail = EventTail(run_dir / EVENTS)
    out: list[Event] = []
    while batch := tail.poll():
        out.extend(batch)
    return out


def record_process(run_dir: Path, pid: int) -> None:
    """Note in run.json which process trains this run, so views can tell if it is still there."""
    info = read_json(run_dir / RUN_INFO) or {}
    info.update(pid=pid, pid_start=process_start(pid))
    write_json_atomic(run_dir / RUN_INFO, info)


def process_is_run(info: dict[str, Any]) -> bool:
    """True if the process named in run.json is alive and is still that run's process."""
    pid = int(info.get("pid", 0) or 0)
    if not pid_alive(pid):
        return False
    recorded = info.get("pid_start")
    current = process_start(pid)
    if recorded is not None and current is not None:
        return int(recorded) == current
    try:  # no start time to compare (older run.json): the pid must at least be a tuiloop
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"tuiloop" in f.read()
    except OSError:
        return True  # no /proc: trust the pid


def control_status(run_dir: Path, timeout: float = 1.0) -> str:
    """``live`` (the socket accepts a connection), ``stale`` (it is there, nobody listens) or ``absent``."""
    from tuiloop.control import socket_address

    path = run_dir / CONTROL
    if not path.exists():
        return "absent"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        with socket_address(path) as addr:
            s.connect(addr)
        return "live"
    except FileNotFoundError:
        return "absent"
    except PermissionError:
        return "live"  # someone else's live run: it is there, but not ours to command
    except OSError:
        return "stale"
    finally:
        s.close()


def control_alive(run_dir: Path, timeout: float = 1.0) -> bool:
    """True if the run's control socket accepts a connection (the run is live)."""
    return control_status(run_dir, timeout) == "live"


@dataclass
class RunState:
    """What ``ls`` and ``attach`` need to know about a run without reading its events."""

    state: str  # running | finished | stopped | early_stopped | failed | crashed
    info: dict[str, Any]
    summary: dict[str, Any] | None
    detail: str = ""  # why a run without a summary counts as crashed

    @property
    def live(self) -> bool:
        return self.state == "running"


def _ended(info: dict[str, Any], summary: dict[str, Any]) -> RunState:
    status = summary.get("status", "finished")
    return RunState({"completed": "finished"}.get(status, status), info, summary)


def run_state(run_dir: Path) -> RunState:
    """Classify a run: a summary says how it ended; no summary and no live process is a crash.

    Live means the control socket answers, or (while the run is still starting, before the
    socket exists) the recorded process is alive and is the same process (pid start time).
    A socket that refuses connections is stale: its process is gone, even if the pid was reused.
    """
    info = read_json(run_dir / RUN_INFO) or {}
    summary = read_json(run_dir / SUMMARY)
    if summary is not None:
        return _ended(info, summary)
    host = info.get("host")
    if host and host != socket.gethostname():
        return _elsewhere(run_dir, info, host)
    control = control_status(run_dir)
    if control == "live" or (control == "absent" and process_is_run(info)):
        return RunState("running", info, None)
    summary = read_json(run_dir / SUMMARY)  # it may have ended while we looked
    if summary is not None:
        return _ended(info, summary)
    pid = info.get("pid") or "?"
    if control == "stale":
        detail = f"its process (pid {pid}) is gone and left a stale control socket, without a summary"
    else:
        detail = f"its process (pid {pid}) is gone without writing a summary"
    return RunState("crashed", info, None, detail)


REMOTE_QUIET_S = 600.0


def _elsewhere(run_dir: Path, info: dict[str, Any], host: str) -> RunState:
    """A run on another machine (a shared filesystem): its process and socket cannot be checked
    from here, so a recently written event log is the only sign of life."""
    try:
        quiet = time.time() - (run_dir / EVENTS).stat().st_mtime
    except OSError:
        quiet = time.time() - float(info.get("started") or 0)
    if quiet < REMOTE_QUIET_S:
        return RunState("running", info, None, f"runs on {host}; its log was written {quiet:.0f}s ago")
    return RunState("crashed", info, None, f"runs on {host} and has written nothing for {quiet / 60:.0f} minutes, without a summary")


def is_run_dir(path: Path) -> bool:
    """True if ``path`` looks like a tuiloop run directory."""
    return (path / RUN_INFO).is_file() or (path / EVENTS).is_file()
