"""This process's place in a distributed run (torchrun, DDP), and the collectives the loop agrees through.

Every decision that ends or pauses the loop is taken by all ranks at the same step: every few
steps (about 4 times a second) they exchange a small vector of flags with one ``all_reduce(MAX)``
(:meth:`Ranks.agree`). Rank 0 puts in it the commands its control socket received and whether
its log is due; any rank puts in a stop it was asked for by a signal. A single process has the
same interface with no communication (:data:`SINGLE`).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuiloop.engine.commands import AGREED

if TYPE_CHECKING:
    import torch

# torch is imported where it is used: a session imports this module before it says "importing torch".

# The slots of the agreement vector: each holds 0/1 (or a small count), merged by MAX. One per
# command the ranks agree on, then whether rank 0's log is due and the steps to the next agreement.
SLOTS = (*AGREED, "flush", "next")
SLOT = {name: i for i, name in enumerate(SLOTS)}
AGREE_EVERY_S = 0.25  # aim: an agreement about this often, so a command acts within a second
MAX_AGREE_STEPS = 10_000
ERROR_FILE = "rank-{rank}.error.json"


@dataclass
class Ranks:
    """Rank, world size and device of this process; collectives are no-ops for a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""
    nodes: tuple[str, ...] = ()  # host names, in the order of their first rank
    peers: tuple[tuple[str, int], ...] = ()  # (host, pid) of every rank
    log_dir: Path | None = None  # ranks/ of the run directory, where a failing rank leaves its error

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- joining -----------------------------------------------------------------------------
    @classmethod
    def from_env(cls, timeout_s: float | None = None) -> Ranks:
        """Join the process group torchrun (RANK, WORLD_SIZE, LOCAL_RANK) or SLURM (SLURM_PROCID,
        SLURM_NTASKS, SLURM_LOCALID) describes; gloo on CPUs, NCCL on GPUs."""
        import torch  # lazy: after the run says "importing torch"
        import torch.distributed as dist  # lazy: after the run says "importing torch"

        env: Mapping[str, str] = os.environ
        if "RANK" not in env and "SLURM_PROCID" in env:  # srun: one task per process
            env = {
                **env,
                "RANK": env["SLURM_PROCID"],
                "WORLD_SIZE": env.get("SLURM_NTASKS", "1"),
                "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            }
            os.environ.setdefault("MASTER_PORT", "29500")
            os.environ.update({k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")})
        rank, world, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        seconds = timeout_s or float(os.environ.get("TUILOOP_DIST_TIMEOUT", 600))
        if not dist.is_initialized():
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=seconds))
        ranks = cls(rank, world, local, backend)
        ranks.peers = tuple(tuple(p) for p in ranks.gather((socket.gethostname(), os.getpid())))
        ranks.nodes = tuple(dict.fromkeys(host for host, _ in ranks.peers))
        return ranks

    def device(self) -> torch.device:
        """The device this rank trains on: its own GPU, else the CPU."""
        import torch  # lazy: after the run says "importing torch"

        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def close(self) -> None:
        import torch.distributed as dist  # lazy: after the run says "importing torch"

        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    # ---- collectives ---------------------------------------------------------------------------
    def agree(self, flags: list[int], device: torch.device) -> list[int]:
        """Every rank's flags merged by MAX: the same decision on every rank."""
        if not self.distributed:
            return flags
        import torch  # lazy: after the run says "importing torch"
        import torch.distributed as dist  # lazy: after the run says "importing torch"

        t = torch.tensor(flags, dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce ``tensor`` in place (SUM); a no-op for a single process."""
        if self.distributed:
            import torch.distributed as dist  # lazy: after the run says "importing torch"

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist  # lazy: after the run says "importing torch"

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist  # lazy: after the run says "importing torch"

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_tensors(self, tensors: list[torch.Tensor]) -> None:
        """Rank 0's values of ``tensors`` copied in place into every rank's (the same weights everywhere)."""
        if self.distributed:
            import torch.distributed as dist  # lazy: after the run says "importing torch"

            for t in tensors:
                dist.broadcast(t, src=0)

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist  # lazy: after the run says "importing torch"

            dist.barrier()

    # ---- a rank that fails ------------------------------------------------------------------------
    def report_failure(self, error: dict[str, Any]) -> None:
        """Leave this rank's error where rank 0 finds it (the launcher then ends the other ranks)."""
        if self.log_dir is None:
            return
        tmp = self.log_dir / f".{ERROR_FILE.format(rank=self.rank)}.tmp"
        tmp.write_text(json.dumps({"rank": self.rank, **error}), encoding="utf-8")
        os.replace(tmp, self.log_dir / ERROR_FILE.format(rank=self.rank))

    def peer_failure(self, wait_s: float = 0.0) -> dict[str, Any] | None:
        """The error another rank left, if any (waiting up to ``wait_s`` for one to appear)."""
        if self.log_dir is None or not self.distributed:
            return None
        deadline = time.monotonic() + wait_s
        while True:
            for path in sorted(self.log_dir.glob(ERROR_FILE.format(rank="*"))):
                if path.name != ERROR_FILE.format(rank=self.rank):
                    try:
                        return json.loads(path.read_text(encoding="utf-8"))
                    except (OSError, ValueError):
                        continue
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def kill_local_peers(self) -> None:
        """SIGKILL this node's other ranks (a forced end must leave no orphans)."""
        here = socket.gethostname()
        for host, pid in self.peers:
            if host == here and pid != os.getpid():
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


SINGLE = Ranks()


def steps_between_agreements(seconds_per_step: float) -> int:
    """How many optimizer steps make about :data:`AGREE_EVERY_S`."""
    if seconds_per_step <= 0:
        return 1
    return max(1, min(MAX_AGREE_STEPS, round(AGREE_EVERY_S / seconds_per_step)))
