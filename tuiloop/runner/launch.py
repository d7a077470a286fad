"""The launcher of a distributed run: PyTorch's own torchrun (``torch.distributed.run``), run in
its own session so that a dropped SSH connection ends neither it nor a rank.

It holds the run's lock for the whole run (the ranks are torchrun's children, each in a session
of its own). torchrun handles SIGTERM only: it passes it on to the ranks, which stop together.
Ctrl+C and the monitor's keys reach rank 0 through its control socket instead, so torchrun is
never told to tear the ranks down in the middle of a step. To resume, it first checks, in this
process, that the run can go on (the spec builds and the checkpoint fits), before any rank
starts and before the run directory changes.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from tuiloop.rundir.lock import RunLock
from tuiloop.runner.spec_run import LAUNCHER_ENV, check_resume
from tuiloop.runner.training_process import read_payload, read_spec, switch_output_to_log
from tuiloop.spec import SpecError

SPEC_FILE_ENV = "TUILOOP_SPEC_FILE"  # where the ranks read the spec (not the run directory: a resume may still fail)
RUN_DIR_ENV = "TUILOOP_RUN_DIR"


def main(
    run_dir: Path | None, lock_fd: int | None, resume: bool, torchrun: list[str], report_ready: bool = False
) -> int:
    payload = read_payload(wait_go_ahead=report_ready)
    lock = RunLock.adopt(run_dir, lock_fd) if run_dir is not None and lock_fd is not None else None
    if resume and run_dir is not None:
        try:
            check_resume(read_spec(payload), run_dir)
        except SpecError as e:
            print(f"tuiloop: error: {e}", file=sys.stderr, flush=True)
            return 2
        if report_ready:
            switch_output_to_log(lock.home if lock is not None else run_dir)
    with tempfile.TemporaryDirectory(prefix="tuiloop-launch-") as tmp:
        spec_file = Path(tmp) / "spec.json"
        spec_file.write_text(json.dumps(payload), encoding="utf-8")
        os.environ.update(
            {SPEC_FILE_ENV: str(spec_file), LAUNCHER_ENV: str(os.getpid()), "TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGTERM"}
        )
        if run_dir is not None:
            os.environ[RUN_DIR_ENV] = str(run_dir)
        # Not from a terminal: this process has its own session; SIGHUP and SIGINT mean nothing to it.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        argv = [*torchrun, "-m", "tuiloop", "_rank"] + (["--resume"] if resume else [])
        from torch.distributed.elastic.multiprocessing.errors import (  # lazy: torch; `tuiloop run` loads this module
            ChildFailedError,
        )
        from torch.distributed.run import main as torchrun_main  # lazy: torch; `tuiloop run` loads this module

        try:
            torchrun_main(argv)
        except ChildFailedError:
            return 1  # torchrun printed which rank failed; rank 0 recorded why in the run directory
        finally:
            if lock is not None:
                lock.release()
    return 0
