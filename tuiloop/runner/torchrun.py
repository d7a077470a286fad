"""torchrun's options for a distributed run: how many processes per machine, and the rendezvous."""

from __future__ import annotations

from tuiloop.spec import SpecError


def processes_for(value: object, where: str = "--nproc-per-node") -> int:
    """Processes per machine from ``--nproc-per-node`` or ``[run] nproc_per_node``: a number, or
    "auto" for one per visible GPU."""
    if value == "auto":
        import torch  # lazy: keeps torch out of the monitor (its R key resumes through this module)

        return max(torch.cuda.device_count(), 1)
    try:
        nproc = int(value)  # type: ignore[call-overload]  # any object: a wrong kind raises TypeError, caught below
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
