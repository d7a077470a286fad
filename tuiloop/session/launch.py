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
from tuiloop.session.run import LAUNCHER_ENV
from tuiloop.session.worker import read_payload, read_spec, switch_output_to_log
from tuiloop.spec import SpecError

SPEC_FILE_ENV = "TUILOOP_SPEC_FILE"  # where the ranks read the spec (not the run directory: a resume may still fail)
RUN_DIR_ENV = "TUILOOP_RUN_DIR"


def main(
    run_dir: Path | None, lock_fd: int | None, resume: bool, torchrun: list[str], report_ready: bool = False
) -> int:
    payload = read_payload(wait_go_ahead=report_ready)
    lock = RunLock.adopt(run_dir, lock_fd) if run_dir is not None and lock_fd is not None else None
    if resume and run_dir is not None:
        from tuiloop.session.run import check_resume
        from tuiloop.spec import SpecError

        try:
            check_resume(read_spec(payload), run_dir)
        except SpecError as e:
            print(f"tuiloop: error: {e}", file=sys.stderr, flush=True)
            return 2
        if report_ready:
            switch_output_to_log(run_dir)
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
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
        from torch.distributed.run import main as torchrun_main

        try:
            torchrun_main(argv)
        except ChildFailedError:
            return 1  # torchrun printed which rank failed; rank 0 recorded why in the run directory
        finally:
            if lock is not None:
                lock.release()
    return 0


def processes_for(value: object, where: str = "--nproc-per-node") -> int:
    """Processes per machine from ``--nproc-per-node`` or ``[run] nproc_per_node``: a number, or
    "auto" for one per visible GPU."""
    if value == "auto":
        import torch

        return max(torch.cuda.device_count(), 1)
    try:
        nproc = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise SpecError(
            where, f"{value!r} is not a number of processes", 'Give a number, such as --nproc-per-node 4, or "auto".'
        ) from None
    if nproc < 1:
        raise SpecError(where, "must be at least 1")
    return nproc


def torchrun_args(
    nproc: int, nnodes: int = 1, node_rank: int = 0, endpoint: str | None = None, rdzv_id: str | None = None
) -> list[str]:
    """torchrun's options for this launch: standalone on one machine; on several, a static
    rendezvous at ``endpoint``, so node 0 hosts rank 0 (and the run directory)."""
    if nnodes == 1 and not endpoint:
        return ["--standalone", f"--nproc-per-node={nproc}"]
    args = [
        f"--nproc-per-node={nproc}",
        f"--nnodes={nnodes}",
        f"--node-rank={node_rank}",
        "--rdzv-backend=static",
        f"--rdzv-endpoint={endpoint}",
    ]
    return args + ([f"--rdzv-id={rdzv_id}"] if rdzv_id else [])
