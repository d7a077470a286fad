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

import contextlib
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
        try:
            (path / CHECKPOINTS).mkdir(mode=0o700)
        except BaseException:  # a full disk: no half-made run directory
            path.rmdir()
            raise
        return path.resolve()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temp file and ``os.replace`` so readers never see half a file."""
    write_atomic(path, json_bytes(data))


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` through a temp file and ``os.replace``; a failure leaves ``path`` as it was."""
    tmp = stage(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def json_bytes(data: Any) -> bytes:
    """A JSON file's bytes as tuiloop writes them (indented, one newline at the end)."""
    return (json.dumps(data, indent=2, allow_nan=True) + "\n").encode()


def stage(path: Path, data: bytes) -> Path:
    """Write ``data`` into a temp file beside ``path``, flushed and fsynced, and return the temp:
    ``os.replace`` puts it in place. On a full disk or a read-only folder it raises the
    OSError (naming ``path``) and leaves no temp behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        with contextlib.suppress(OSError):  # on a read-only folder even this fails
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            e.filename = str(path)  # the file meant, not its temp
        raise
    return tmp


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
