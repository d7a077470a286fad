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


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (zombies excepted, where that can be told)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child has exited; Linux shows it as state Z
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def control_alive(run_dir: Path, timeout: float = 1.0) -> bool:
    """True if the run's control socket accepts a connection (the run is live)."""
    from tuiloop.control import socket_address

    path = run_dir / CONTROL
    if not path.exists():
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        with socket_address(path) as addr:
            s.connect(addr)
        return True
    except OSError:
        return False
    finally:
        s.close()


@dataclass
class RunState:
    """What ``ls`` and ``attach`` need to know about a run without reading its events."""

    state: str  # running | finished | stopped | early_stopped | failed | crashed
    info: dict[str, Any]
    summary: dict[str, Any] | None


def run_state(run_dir: Path) -> RunState:
    """Classify a run: a summary says how it ended; no summary and no live process is a crash."""
    info = read_json(run_dir / RUN_INFO) or {}
    summary = read_json(run_dir / SUMMARY)
    if summary is not None:
        status = summary.get("status", "finished")
        state = {"completed": "finished"}.get(status, status)
        return RunState(state, info, summary)
    pid = int(info.get("pid", 0) or 0)
    if pid_alive(pid) or control_alive(run_dir):
        return RunState("running", info, None)
    return RunState("crashed", info, None)


def is_run_dir(path: Path) -> bool:
    return (path / RUN_INFO).is_file() or (path / EVENTS).is_file()
