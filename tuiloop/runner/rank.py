"""One rank of a distributed run: started by tuiloop's launcher (torchrun), or by one the user runs
(``torchrun ... -m tuiloop run SPEC --headless``, SLURM's ``srun``), which tuiloop joins.

Rank 0 owns the run directory (event log, checkpoints, summary, control socket) and tells the
other ranks where it is. Every rank's own output (what the user's code prints, warnings, errors)
goes to ``ranks/rank-N.log`` in it; rank 0's plain progress lines go where the launcher's
output goes (the terminal, or output.log).
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys
import traceback
from pathlib import Path
from typing import IO

from tuiloop.engine.distributed import ERROR_FILE, Ranks
from tuiloop.engine.exits import EXIT_FAILED, EXIT_USAGE
from tuiloop.engine.origin import describe_where, format_frames, user_frames
from tuiloop.engine.plain import PlainSink
from tuiloop.rundir.handle import RunDir
from tuiloop.rundir.layout import RANKS
from tuiloop.rundir.lock import RunLock
from tuiloop.runner.launch import RUN_DIR_ENV, SPEC_FILE_ENV
from tuiloop.runner.spec_run import execute, follow, lock_for_resume, new_run_dir
from tuiloop.runner.training_process import read_spec
from tuiloop.spec import Spec, SpecError


def under_a_launcher() -> bool:
    """True in a process that torchrun or srun started as one rank of several."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return True
    return "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1


def main(resume: bool) -> int:
    """``tuiloop _rank``: a rank tuiloop's launcher started (the spec and run directory in its environment)."""
    spec = read_spec(json.loads(Path(os.environ[SPEC_FILE_ENV]).read_text(encoding="utf-8")))
    run_dir = Path(os.environ[RUN_DIR_ENV]) if os.environ.get(RUN_DIR_ENV) else None
    return run_rank(spec, run_dir, resume, launched=True)


def run_rank(spec: Spec, run_dir: Path | None, resume: bool, launched: bool = False) -> int:
    """Train as this process's rank; returns its exit status (it ends the process quickly after)."""
    ranks = Ranks.from_env()
    lock = None
    code = EXIT_FAILED
    try:
        if ranks.is_main:
            if launched:  # the launcher holds the lock; on node 0 it knows the run directory
                lock = RunLock.held_elsewhere(run_dir) if run_dir else None
            elif resume:
                assert run_dir is not None
                lock = lock_for_resume(run_dir)
            else:
                run_dir, lock = new_run_dir(spec)
            if lock is not None:  # a failed session's errors are not this session's (the ranks learn the folder next)
                with lock.home.subdir(RANKS) as logs:
                    for name in fnmatch.filter(logs.names(), ERROR_FILE.format(rank="*")):
                        logs.unlink(name)
        run_dir = Path(ranks.broadcast(str(run_dir) if ranks.is_main else None))
        with RunDir.open(run_dir) as home:  # each rank writes through a handle of its own, never a link
            logs = home.subdir(RANKS)  # held open for the process's life
        ranks.log_dir = logs.via()
        plain = _redirect_output(logs, f"rank-{ranks.rank}.log")
        if ranks.is_main:
            sinks = [PlainSink(plain)]
            if resume:
                code, _ = execute(spec, resume=run_dir, sinks=sinks, lock=lock, ranks=ranks)
            else:
                code, _ = execute(spec, run_dir=run_dir, sinks=sinks, lock=lock, ranks=ranks)
        else:
            code = follow(spec, run_dir if resume else None, ranks)
    except SpecError as e:  # a resume that cannot go on, found by rank 0
        print(f"tuiloop: error: {e}", file=sys.__stderr__, flush=True)
        code = EXIT_USAGE
    except Exception as e:  # a rank's set-up failed: leave the error for rank 0, end quickly
        ranks.report_failure(
            {
                "error": f"{type(e).__name__}: {e}",
                "where": describe_where(e, "setup", 0, 0),
                "traceback": traceback.format_exc(),
                "user_frames": format_frames(user_frames(e)),
            }
        )
        traceback.print_exc()
        code = EXIT_FAILED
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    if code == 0:
        ranks.close()
    os._exit(code)  # no waiting on a process group whose other members may be gone


def _redirect_output(logs: RunDir, name: str) -> IO[str]:
    """Send this process's stdout and stderr to ``logs/name``; return a stream to where stdout went before."""
    sys.stdout.flush()
    sys.stderr.flush()
    before = os.dup(1)
    log = logs.open_fd(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return os.fdopen(before, "w", buffering=1, encoding="utf-8", errors="replace")
