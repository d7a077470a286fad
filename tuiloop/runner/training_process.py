"""The training process behind the live monitor: started in its own session, so a hung-up
terminal (a dropped SSH connection) does not end it.

The parent creates (or, to resume, locks) the run directory and hands the training process its lock as an
open file, so the run is live without a gap. The training process forks at once: its parent
watches the child that trains and records an ending the child could not (:mod:`tuiloop.runner.watch`). The spec travels on the training process's stdin: a resume
must not touch spec.toml before it is known to work. A resumed training process first writes to a pipe
its parent relays to the terminal; once the checkpoint is loaded it says so, waits until the
parent has put what it relayed into output.log (the parent closes the pipe the spec came on), and
switches its output to output.log. A failed resume writes nothing into the run directory.

For a distributed run the process started is the launcher (:mod:`tuiloop.runner.launch`),
which runs torchrun; its ranks run :mod:`tuiloop.runner.rank`.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import IO

from tuiloop.engine.plain import PlainSink
from tuiloop.rundir.handle import RunDir, held
from tuiloop.rundir.layout import OUTPUT
from tuiloop.rundir.lock import RunLock
from tuiloop.runner.life import SESSION_ENV
from tuiloop.runner.spec_run import execute, load_run_spec, lock_for_resume
from tuiloop.runner.torchrun import processes_for, torchrun_args
from tuiloop.runner.watch import fork_watched
from tuiloop.spec import Spec
from tuiloop.spec.dump import dump_toml
from tuiloop.spec.load import parse_spec

READY = "\x00tuiloop: ready\n"


def start(
    run_dir: Path | None,
    lock: RunLock | None,
    spec: Spec,
    resume: bool = False,
    torchrun: list[str] | None = None,
    session: str = "",
    inherit_output: bool = False,
) -> subprocess.Popen:
    """Start the training process for ``run_dir`` in its own session; the caller may close its
    copy of the lock after. ``torchrun``: start the launcher of a distributed run with these
    torchrun options (on a node that does not host rank 0, without a run directory or lock).
    ``inherit_output``: print to this terminal (headless) instead of output.log."""
    if torchrun is None:
        assert run_dir is not None and lock is not None
        cmd = [sys.executable, "-m", "tuiloop", "_train", str(run_dir), "--lock-fd", str(lock.fd)]
    else:
        cmd = (
            [sys.executable, "-m", "tuiloop", "_launch"]
            + ([str(run_dir)] if run_dir else [])
            + (["--lock-fd", str(lock.fd)] if lock else [])
        )
    cmd += ["--resume"] if resume else []
    cmd += ["--report-ready"] if resume and torchrun is not None and not inherit_output else []
    cmd += ["--", *torchrun] if torchrun is not None else []
    env = {**os.environ, "PYTHONUNBUFFERED": "1", SESSION_ENV: session or os.environ.get(SESSION_ENV, "")}
    if resume and not inherit_output:
        out: IO[bytes] | int | None = subprocess.PIPE
    elif inherit_output or run_dir is None:
        out = None
    else:
        assert lock is not None
        out = lock.home.append(OUTPUT)  # through the run's handle: owner-only, never through a link
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            pass_fds=(lock.fd,) if lock else (),
            start_new_session=True,
            env=env,
        )
    finally:
        if out is not None and not isinstance(out, int):
            out.close()
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(spec_payload(spec)).encode() + b"\n")  # one line: no indent
    proc.stdin.flush()
    if out is not subprocess.PIPE:  # else wait_ready closes it: the training process's go-ahead
        proc.stdin.close()
    return proc


_go_ahead: int | None = None  # the pipe the parent closes once it has logged the start-up output


def read_payload(wait_go_ahead: bool = False) -> dict[str, str | None]:
    """The spec :func:`start` sent, read from stdin (the training process's side). Stdin is
    /dev/null after, so the user's code never reads the pipe; ``wait_go_ahead``: keep the pipe
    on a private descriptor for :func:`switch_output_to_log`."""
    global _go_ahead
    payload = json.loads(sys.stdin.buffer.readline())
    if wait_go_ahead:
        _go_ahead = os.dup(0)  # not inherited by children
    stdin_from_devnull()
    return payload


def spec_payload(spec: Spec) -> dict[str, str | None]:
    """A spec as the training process receives it (and parses it back with :func:`read_spec`)."""
    return {"spec": dump_toml(spec.raw), "base_dir": str(spec.base_dir), "path": str(spec.path) if spec.path else None}


def read_spec(payload: dict[str, str | None]) -> Spec:
    return parse_spec(
        payload["spec"] or "",
        path=Path(p) if (p := payload.get("path")) else None,
        base_dir=Path(payload["base_dir"] or "."),
    )


def switch_output_to_log(run_dir: Path | RunDir) -> None:
    """Say READY on the pipe the parent reads, wait until it has logged what came before (it
    closes the spec's pipe), then send this process's output to output.log."""
    global _go_ahead
    sys.stdout.write(READY)
    sys.stdout.flush()
    if _go_ahead is not None:
        while os.read(_go_ahead, 4096):  # until EOF: the parent closed its end
            pass
        os.close(_go_ahead)
        _go_ahead = None
    home, done = held(run_dir)
    try:
        out = home.open_fd(OUTPUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    finally:
        done()
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)


def wait_ready(proc: subprocess.Popen, echo: IO[str], run_dir: Path) -> bool:
    """Relay a resuming training process's output until it is ready (True) or has exited (False). Once it
    is ready, what it printed meanwhile (the user's module imported, the data built) goes to the
    top of its part of ``run_dir``'s output.log before it writes there itself."""
    assert proc.stdout is not None and proc.stdin is not None
    said: list[str] = []
    try:
        with proc.stdout:
            for raw in proc.stdout:
                line = raw.decode("utf-8", errors="replace")
                if line == READY:
                    if said:
                        with RunDir.open(run_dir) as home, home.append(OUTPUT) as log:
                            log.write("".join(said).encode())
                    return True
                said.append(line)
                echo.write(line)
                echo.flush()
        proc.wait()
        return False
    finally:
        proc.stdin.close()  # the go-ahead


def resume_in_background(run_dir: Path) -> tuple[subprocess.Popen, str]:
    """Continue a suspended or stopped run in a new training process, as ``tuiloop run --resume``
    does (the monitor's R key); returns the process once it is training, and its session.
    Raises SpecError, or RuntimeError with the training process's own words, when it cannot resume."""
    spec = load_run_spec(run_dir)
    nproc = processes_for(spec.run.nproc_per_node)
    session = uuid.uuid4().hex[:12]
    lock = lock_for_resume(run_dir)
    try:
        proc = start(
            run_dir, lock, spec, resume=True, torchrun=torchrun_args(nproc) if nproc > 1 else None, session=session
        )
    finally:
        lock.release()  # the training process holds it now
    said = io.StringIO()
    if not wait_ready(proc, said, run_dir):
        raise RuntimeError(said.getvalue().strip() or f"the training process exited with status {proc.returncode}")
    return proc, session


def main(run_dir: Path, lock_fd: int, resume: bool) -> int:
    """The training process: read the spec from stdin and train, watched by a parent of its own
    that records an ending it could not write (:mod:`tuiloop.runner.watch`)."""
    global _go_ahead
    payload = read_payload(wait_go_ahead=resume)
    code = fork_watched(run_dir, lock_fd, resume)
    if code is not None:  # the watcher
        if _go_ahead is not None:
            os.close(_go_ahead)
            _go_ahead = None
        return code
    spec = read_spec(payload)
    lock = RunLock.adopt(run_dir, lock_fd)
    if not resume:
        code, _ = execute(spec, run_dir=run_dir, sinks=[PlainSink(sys.stdout)], lock=lock)
        return code
    code, _ = execute(
        spec, resume=run_dir, sinks=[PlainSink(sys.stdout)], lock=lock, on_ready=lambda: switch_output_to_log(lock.home)
    )
    return code


def stdin_from_devnull() -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
