"""The training process behind the live monitor: started in its own session, so a hung-up
terminal (a dropped SSH connection) does not end it.

The parent creates (or, to resume, locks) the run directory and hands the worker its lock as an
open file, so the run is live without a gap. The spec travels on the worker's stdin: a resume
must not touch spec.toml before it is known to work. A resumed worker first writes to a pipe
its parent relays to the terminal; once the checkpoint is loaded it says so and switches its
output to output.log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import IO

from tuiloop.rundir.layout import OUTPUT
from tuiloop.rundir.lock import RunLock
from tuiloop.spec import Spec
from tuiloop.spec.dump import dump_toml

READY = "\x00tuiloop: ready\n"


def start(run_dir: Path, lock: RunLock, spec: Spec, resume: bool = False) -> subprocess.Popen:
    """Start ``tuiloop _worker`` for ``run_dir``; the caller may close its copy of the lock after."""
    cmd = [sys.executable, "-m", "tuiloop", "_worker", str(run_dir), "--lock-fd", str(lock.fd)] + (["--resume"] if resume else [])
    payload = {"spec": dump_toml(spec.raw), "base_dir": str(spec.base_dir), "path": str(spec.path) if spec.path else None}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out: IO[bytes] | int = subprocess.PIPE if resume else open(run_dir / OUTPUT, "ab")
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, pass_fds=(lock.fd,), start_new_session=True, env=env)
    finally:
        if not isinstance(out, int):
            out.close()
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(payload).encode())
    proc.stdin.close()
    return proc


def wait_ready(proc: subprocess.Popen, echo: IO[str]) -> bool:
    """Relay a resuming worker's output until it is ready (True) or has exited (False)."""
    assert proc.stdout is not None
    with proc.stdout:
        for raw in proc.stdout:
            line = raw.decode("utf-8", errors="replace")
            if line == READY:
                return True
            echo.write(line)
            echo.flush()
    proc.wait()
    return False


def main(run_dir: Path, lock_fd: int, resume: bool) -> int:
    """The worker process: read the spec from stdin and train."""
    from tuiloop.engine.plain import PlainSink
    from tuiloop.session.run import execute
    from tuiloop.spec.load import parse_spec

    payload = json.loads(sys.stdin.buffer.read())
    _stdin_from_devnull()
    path = Path(payload["path"]) if payload.get("path") else None
    spec = parse_spec(payload["spec"], path=path, base_dir=Path(payload["base_dir"]))
    if not resume:
        code, _ = execute(spec, run_dir=run_dir, sinks=[PlainSink(sys.stdout)], lock_fd=lock_fd)
        return code

    def ready() -> None:
        sys.stdout.write(READY)
        sys.stdout.flush()
        out = os.open(run_dir / OUTPUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)

    code, _ = execute(spec, resume=run_dir, sinks=[PlainSink(sys.stdout)], lock_fd=lock_fd, on_ready=ready)
    return code


def _stdin_from_devnull() -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
