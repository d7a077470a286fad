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

Every file is owner-only (0600, folders 0700), and the training process writes them all through
one handle on the directory (:mod:`tuiloop.rundir.handle`), never through a symbolic link.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import platform
import socket
import sys
from pathlib import Path
from typing import Any

from tuiloop.rundir.handle import RunDir, held

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


def create_run_dir(out_dir: Path, name: str) -> RunDir:
    """Make a fresh, uniquely named, owner-only run directory and hold it open (its path is
    absolute: views read it from anywhere); raises :class:`~tuiloop.rundir.handle.RunDirError` for an unsafe ``out_dir``.
    On a full disk it leaves no half-made directory."""
    home = RunDir.create(out_dir, name)
    try:
        home.subdir(CHECKPOINTS).close()
    except BaseException:
        home.close()
        with contextlib.suppress(OSError):
            home.path.rmdir()
        raise
    return home


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temp file and ``os.replace`` so readers never see half a file."""
    home, done = held(path.parent)
    try:
        home.write_atomic(path.name, json_bytes(data))
    finally:
        done()


def json_bytes(data: Any) -> bytes:
    """A JSON file's bytes as tuiloop writes them (indented, one newline at the end)."""
    return (json.dumps(data, indent=2, allow_nan=True) + "\n").encode()


def read_json(path: Path) -> dict[str, Any] | None:
    """Read a JSON object from a file, or None if it is missing or unreadable (what a reader of
    another process's file needs: :mod:`tuiloop.rundir.records` also says why)."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def read_json_in(home: RunDir, name: str) -> dict[str, Any] | None:
    """A JSON object in the directory held as ``home`` (never through a link), or None."""
    try:
        data = json.loads(home.read_bytes(name))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def update_info(where: Path | RunDir, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into run.json (the only writer of that file) and return the result."""
    home, done = held(where)
    try:
        info = read_json_in(home, RUN_INFO) or {}
        info.update(fields)
        home.write_atomic(RUN_INFO, json_bytes(info))
        return info
    finally:
        done()


def who() -> dict[str, Any]:
    """What run.json records about the process that writes it."""
    return {
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        "argv": sys.argv,
        "python": platform.python_version(),
    }


def write_summary(where: Path | RunDir, summary: dict[str, Any]) -> None:
    """summary.json: written once, when the run has ended."""
    home, done = held(where)
    try:
        home.write_atomic(SUMMARY, json_bytes(summary))
    finally:
        done()


def is_run_dir(path: Path) -> bool:
    """True if ``path`` looks like a tuiloop run directory."""
    return (path / RUN_INFO).is_file() or (path / EVENTS).is_file()
