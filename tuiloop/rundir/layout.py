"""The files of a run directory, and the one way each of them is written.

Layout of ``<out_dir>/<name>-<YYYYmmdd-HHMMSS>-<4 hex>/``::

    run.lock           held (flock) by the training process for its whole life: live = locked
    spec.toml          the resolved spec (after --set overrides)
    run.json           who runs it: pid, host, start time, command line, versions
    events.jsonl       append-only event log, one JSON object per line (tuiloop.rundir.eventlog)
    digest.json        what the log's first N bytes add up to, saved every 30 s (tuiloop.rundir.digest_file)
    checkpoints/       best.pt, last.pt, epoch-NNNN.pt, manual-stepNNNNNNN.pt
    summary.json       written once when the run ends (absent while live or after a crash)
    control.sock       the live run's command socket (owner-only), gone when it ends
    output.log         stdout/stderr of a run started in the background
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import secrets
import socket
import sys
import time
from pathlib import Path
from typing import Any

LOCK = "run.lock"
SPEC = "spec.toml"
RUN_INFO = "run.json"
EVENTS = "events.jsonl"
DIGEST_FILE = "digest.json"  # a cache of the event log: readers check it fits, else read the whole log
SUMMARY = "summary.json"
CONTROL = "control.sock"
OUTPUT = "output.log"
CHECKPOINTS = "checkpoints"
RANKS = "ranks"  # the other ranks' output in a distributed run: ranks/rank-N.log


def create_run_dir(out_dir: Path, name: str) -> Path:
    """Make a fresh, uniquely named, owner-only run directory (absolute: views read it from anywhere)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        path = out_dir / f"{name}-{stamp}-{secrets.token_hex(2)}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        (path / CHECKPOINTS).mkdir(mode=0o700)
        return path.resolve()


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


def update_info(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into run.json (the only writer of that file) and return the result."""
    info = read_json(run_dir / RUN_INFO) or {}
    info.update(fields)
    write_json_atomic(run_dir / RUN_INFO, info)
    return info


def who() -> dict[str, Any]:
    """What run.json records about the process that writes it."""
    return {
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        "argv": sys.argv,
        "python": platform.python_version(),
    }


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """summary.json: written once, when the run has ended."""
    write_json_atomic(run_dir / SUMMARY, summary)


def is_run_dir(path: Path) -> bool:
    """True if ``path`` looks like a tuiloop run directory."""
    return (path / RUN_INFO).is_file() or (path / EVENTS).is_file()
