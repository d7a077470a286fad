"""``tuiloop run SCRIPT.py``: any Python script as the training process, exactly as a spec run's.

The CLI makes the run directory (``<out_dir>/<name>-<timestamp>-<hex>``, locked from its first
instant, run.json naming the script and its arguments) and starts ``tuiloop _script`` in a
session of its own, its output in output.log. That process forks the watcher of a spec run
(:mod:`tuiloop.runner.watch`); the child hands the lock to :mod:`tuiloop.runner.opening`, where
``tuiloop.track()`` and the callbacks find it when they are given no ``run_dir``, and runs the
script as ``python SCRIPT.py ARGS`` would (``__main__``, ``sys.argv``, its folder first on
``sys.path``). A script that exits or crashes before its tracked run finished is recorded as
failed by the watcher; one that never opened a run gets a summary that says so.

With ``--nproc-per-node N`` the process started is the launcher instead: it holds the lock and
runs torchrun, whose ranks run ``tuiloop _script --rank``; rank 0 writes the run directory (its
output goes to output.log), the other ranks' output goes to ``ranks/rank-N.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from tuiloop.engine.exits import EXIT_FAILED
from tuiloop.engine.sentences import UNTRACKED
from tuiloop.rundir.handle import RunDir
from tuiloop.rundir.layout import EVENTS, OUTPUT, RANKS, RUN_INFO, SUMMARY, read_json, update_info, who, write_summary
from tuiloop.rundir.lock import RunLock
from tuiloop.runner.life import SESSION_ENV
from tuiloop.runner.opening import LOCK_HELD_ENV, RUN_DIR_ENV, hand_over
from tuiloop.runner.watch import fork_watched, how, write_failure


def new_script_dir(home: RunDir, script: Path, args: list[str], name: str) -> RunLock:
    """Lock a fresh run directory for ``script`` and say in run.json what runs there."""
    lock = RunLock.acquire(home)
    try:
        update_info(home, name=name, started=time.time(), script=str(script), script_args=args, **who())
    except BaseException:
        lock.release()
        raise
    return lock


def start(
    run_dir: Path,
    lock: RunLock,
    script: Path,
    args: list[str],
    torchrun: list[str] | None = None,
    session: str = "",
    inherit_output: bool = False,
) -> subprocess.Popen:
    """Start the training process of a script run in its own session (``torchrun``: the launcher
    of its ranks, with these options); the caller may close its copy of the lock after."""
    cmd = [sys.executable, "-m", "tuiloop", "_script", str(run_dir), "--lock-fd", str(lock.fd)]
    cmd += ["--torchrun", json.dumps(torchrun)] if torchrun else []
    cmd += ["--", str(script), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", SESSION_ENV: session, RUN_DIR_ENV: str(run_dir)}
    out = None if inherit_output else lock.home.append(OUTPUT)
    try:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            pass_fds=(lock.fd,),
            start_new_session=True,
            env=env,
        )
    finally:
        if out is not None:
            out.close()


def main(run_dir: Path, lock_fd: int, script: str, args: list[str]) -> int:
    """``tuiloop _script``: run the script in a child watched by this process."""
    code = fork_watched(run_dir, lock_fd, False, untracked=record_untracked)
    if code is not None:  # the watcher
        return code
    hand_over(RunLock.adopt(run_dir, lock_fd))
    return run_script(script, args)


def run_script(script: str, args: list[str]) -> int:
    """Run ``script`` as ``python SCRIPT ARGS`` does, in this process; return its exit status."""
    sys.argv = [script, *args]
    sys.path[0] = str(Path(script).resolve().parent)
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        return 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
        return EXIT_FAILED
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return 0


def record_untracked(run_dir: Path, code: int, started: float) -> None:
    """The summary of a script that never opened its run directory (the caller holds the lock):
    completed or failed by its exit status, so ``ls`` and ``show`` tell how it ended."""
    info = read_json(run_dir / RUN_INFO) or {}
    write_summary(
        run_dir,
        {
            "status": "completed" if code == 0 else "failed",
            "reason": f"{UNTRACKED}; it {how(code)}",
            "tracked": False,
            "epochs_done": 0,
            "steps": 0,
            "final_metrics": {},
            "wall_time_s": time.time() - started,
            "started": info.get("started") or started,
            "ended": time.time(),
        },
    )


def launch(run_dir: Path, lock_fd: int, torchrun: list[str], script: str, args: list[str]) -> int:
    """``tuiloop _script --torchrun``: run the script's ranks under torchrun, holding the run's lock;
    then record an ending rank 0 could not write."""
    lock = RunLock.adopt(run_dir, lock_fd)
    started = time.time()
    offset = _size(run_dir / OUTPUT)
    os.environ.update({RUN_DIR_ENV: str(run_dir), LOCK_HELD_ENV: "1", "TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGTERM"})
    # Not from a terminal: this process has its own session; SIGHUP and SIGINT mean nothing to it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from torch.distributed.elastic.multiprocessing.errors import (  # lazy: torch; `tuiloop run` loads this module
        ChildFailedError,
    )
    from torch.distributed.run import main as torchrun_main  # lazy: torch; `tuiloop run` loads this module

    code = 0
    try:
        torchrun_main([*torchrun, "-m", "tuiloop", "_script", "--rank", "--", script, *args])
    except ChildFailedError:
        code = EXIT_FAILED  # torchrun printed which rank failed
    finally:
        try:
            if not (run_dir / SUMMARY).exists():
                if (run_dir / EVENTS).exists():
                    write_failure(run_dir, code or EXIT_FAILED, offset, started)
                else:
                    record_untracked(run_dir, code, started)
        finally:
            lock.release()
    return code


def rank_main(script: str, args: list[str]) -> int:
    """``tuiloop _script --rank``: one rank of the script; ranks other than 0 print to ``ranks/rank-N.log``."""
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        with RunDir.open(Path(os.environ[RUN_DIR_ENV])) as home, home.subdir(RANKS) as logs:
            log = logs.open_fd(f"rank-{rank}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
    return run_script(script, args)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def internal_main(args: argparse.Namespace, argv: list[str]) -> int:
    """``tuiloop _script``: a script's training process, its launcher (``--torchrun``), or one of its ranks (``--rank``)."""
    if args.rank:
        return rank_main(argv[0], argv[1:])
    if args.torchrun:
        return launch(args.run_dir.resolve(), args.lock_fd, json.loads(args.torchrun), argv[0], argv[1:])
    return main(args.run_dir.resolve(), args.lock_fd, argv[0], argv[1:])
