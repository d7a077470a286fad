"""The watcher of a background training process: the parent that sees how it ended.

A training process that ends without a word (the user's code calls ``os._exit``, a C extension
crashes with SIGSEGV, an abort in a library) can write neither its ``finished`` event nor
summary.json, and a run that just vanished would read as "crashed" with nothing to say why. So
``tuiloop _train`` forks before it imports torch: the child trains, the parent waits for it
and, if the run has no summary, records the ending in the run directory itself: the exit status
or signal, and the user's line from the crash's :mod:`faulthandler` dump in output.log. Then it
ends what the child left behind (on Linux it is their subreaper) and exits as the child did, so
whoever started it (the monitor, ``--detach``'s caller) sees the child's status.

A SIGKILL is not recorded: it comes from outside the run (``kill -9``, the out-of-memory
killer, a lost machine), and such a run stays "crashed", as ``ls`` documents.

The watcher holds no copy of the run's lock while the child lives (the run is live exactly while
the child is, and ends the instant its summary is written); to record an ending it takes the
lock, so a run resumed in the meantime is left alone.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tuiloop.engine.events import Failed, Finished
from tuiloop.engine.origin import fault_dump, fault_frames, format_frames
from tuiloop.rundir.eventlog import EventLog
from tuiloop.rundir.layout import EVENTS, OUTPUT, RUN_INFO, SUMMARY, read_json, write_summary
from tuiloop.rundir.lock import RunIsLive, RunLock
from tuiloop.rundir.scan import scan
from tuiloop.runner.processes import end_children

PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
EXIT_KILLED = 128 + signal.SIGKILL  # as a shell reports a process killed by SIGKILL


Untracked = Callable[[Path, int, float], None]  # (run_dir, exit status, started): record a run that never logged


def fork_watched(run_dir: Path, lock_fd: int, resume: bool, untracked: Untracked | None = None) -> int | None:
    """Fork: in the child return None (train on); in the parent wait for the child and return the
    exit status to leave with. Call before any thread starts. ``untracked``: records the ending of
    a child that never started its event log (a script that logs nothing to tuiloop)."""
    _become_subreaper()
    size = {name: _size(run_dir / name) for name in (EVENTS, OUTPUT)}
    where = _identity(run_dir)
    started = time.time()
    watcher = os.getpid()
    child = os.fork()
    if child == 0:
        _die_with(watcher)  # `kill -9 PID` of the pid --detach printed ends the run, not only its watcher
        return None
    return _watch(child, run_dir, lock_fd, resume, (size, where, started), untracked)


def _watch(
    child: int,
    run_dir: Path,
    lock_fd: int,
    resume: bool,
    before: tuple[dict[str, int], tuple[int, int] | None, float],
    untracked: Untracked | None = None,
) -> int:
    os.close(lock_fd)  # the child's copy keeps the run live; a copy here would outlive its summary

    def forward(signum: int, frame: object) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)  # `kill PID` of the pid --detach printed stops the run
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)  # -N: killed by signal N
    try:
        said = _record(run_dir, code, resume, *before, untracked=untracked)
    except Exception as e:  # a full disk, a directory gone: say it where the run's output goes
        said = True
        _say(f"tuiloop: the training process ended ({how(code)}), and recording that failed: {e}")
    if said or code < 0:
        end_children()  # a worker stuck in __getitem__, whatever the user's code started
        _reap()
    if code < 0:
        _die_of(-code)
    return code


def _record(
    run_dir: Path,
    code: int,
    resume: bool,
    size: dict[str, int],
    where: tuple[int, int] | None,
    started: float,
    untracked: Untracked | None = None,
) -> bool:
    """Write the failure of a child that ended without a summary; True if it did (or could not)."""
    if _identity(run_dir) != where:  # deleted or moved while live: write nothing (it would be created again)
        _say(f"tuiloop: error: the training process {how(code)}; {run_dir} is not the run's directory any more")
        return True
    if code == -signal.SIGKILL or (run_dir / SUMMARY).exists():
        return False
    if resume and _size(run_dir / EVENTS) <= size[EVENTS]:  # it died before the run was its own again
        _say(f"tuiloop: error: the training process {how(code)} before the run could resume")
        return False
    try:
        lock = RunLock.acquire(run_dir, wait=0)
    except RunIsLive:  # resumed already, in the instant since the child died: that run writes here now
        return False
    try:
        if untracked is not None and not (run_dir / EVENTS).exists():
            untracked(run_dir, code, started)
        elif not (run_dir / SUMMARY).exists():
            write_failure(run_dir, code, size[OUTPUT], started)
    finally:
        lock.release()
    return True


def write_failure(run_dir: Path, code: int, output_offset: int, started: float) -> None:
    """The log's Failed and Finished events and summary.json of a child that vanished (the run's
    lock held by the caller)."""
    dump = fault_dump(_tail(run_dir / OUTPUT, output_offset))
    frames = fault_frames(dump) if dump else []
    p = scan(run_dir)
    training = p.session_started is not None and p.session_started >= started  # this session's RunStarted
    place = f"training, epoch {p.done + 1}" + (f", after step {p.step}" if p.step else "") if training else "setup"
    if frames:
        place += f": {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}"
    error = f"the training process {how(code)} without finishing" + _hint(code, dump)
    reason = how(code).removeprefix("was ")
    wall = time.time() - (p.session_started if training and p.session_started else started)
    finished = Finished("failed", reason, p.done, p.step, p.best, p.best_epoch, p.monitor, wall)
    log = EventLog(run_dir)
    try:
        log(Failed(error, place, dump, format_frames(frames)))
        log(finished)
    finally:
        log.close()
    info = read_json(run_dir / RUN_INFO) or {}
    write_summary(
        run_dir,
        {
            "status": "failed",
            "reason": reason,
            "epochs": p.epochs,
            "epochs_done": p.done,
            "steps": p.step,
            "monitor": p.monitor,
            "best_value": p.best,
            "best_epoch": p.best_epoch,
            "final_metrics": {},
            "wall_time_s": wall,
            "started": info.get("started") or started,
            "ended": time.time(),
            "versions": info.get("versions") or {},
        },
    )
    _say(f"tuiloop: error: {error}\n  where: {place}")


def how(code: int) -> str:
    """'exited with status 4', 'was killed by SIGSEGV (segmentation fault)'."""
    if code >= 0:
        return f"exited with status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    what = signal.strsignal(-code) or ""
    return f"was killed by {name}" + (f" ({what.lower()})" if what else "")


def _hint(code: int, dump: str) -> str:
    if dump:
        return ""  # the user's line says where
    if code >= 0:
        return f": os._exit({code}) in the user's code, or a library that ends the process"
    return ": a crash in a C extension or a library"


def _tail(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _say(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass  # the pipe to a resuming CLI is closed once it is ready


def _die_with(parent: int) -> None:
    """Linux: SIGKILL this process when ``parent`` (the watcher) dies; if it died already, go now."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(EXIT_KILLED)


def _become_subreaper() -> None:
    """Linux: the child's orphans (a DataLoader worker whose parent died) become ours to end."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _reap(timeout: float = 2.0) -> None:
    """Wait for the processes just killed, so none stays a zombie of ours."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.02)


def _die_of(signum: int) -> None:
    """End as the child did, by the same signal (without a core dump or a faulthandler report)."""
    faulthandler.disable()
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # a signal that does not end a process
