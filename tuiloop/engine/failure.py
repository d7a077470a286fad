"""What failed and where, as the :class:`Failed` event tells it; in a distributed run, across ranks.

A rank that fails leaves its error where rank 0 finds it (:meth:`Ranks.report_failure`), and
rank 0 reports the rank that failed first: its own error is often only the echo of that one, a
collective whose other side is gone.
"""

from __future__ import annotations

import dataclasses
import traceback

import torch

from tuiloop.engine.distributed import Ranks
from tuiloop.engine.events import Failed
from tuiloop.engine.origin import describe_where, error_text, format_frames, user_frames


def failure_report(e: BaseException, where: str, epoch: int, step: int, ranks: Ranks) -> Failed:
    """The failure ``e`` raised in ``where`` (epoch and step counted from 1), called while handling it."""
    failed = Failed(
        error_text(e),
        describe_where(e, where, epoch, step),
        traceback.format_exc(),
        format_frames(user_frames(e)),
    )
    if not ranks.distributed:
        return failed
    if not ranks.is_main:
        ranks.report_failure(
            {
                "error": failed.error,
                "where": failed.where,
                "traceback": failed.traceback,
                "user_frames": failed.user_frames,
            }
        )
        return failed
    peer = ranks.peer_failure(wait_s=1.0)
    if peer is None:
        if collective_error(e):  # the other side of a collective is gone without a word
            return dataclasses.replace(
                failed,
                error=f"a collective with the other ranks failed; another rank was killed or ran out of memory? ({failed.error})",
            )
        return failed
    return Failed(
        f"rank {peer['rank']}: {peer['error']}",
        f"rank {peer['rank']}, {peer['where']}",
        peer.get("traceback", ""),
        peer.get("user_frames", []),
    )


def failure_reason(failed: Failed, e: BaseException, where: str) -> str:
    """The summary's reason for a failure: the rank that failed, else the error's type and place."""
    return (
        failed.error.split(":")[0] + " failed" if failed.error.startswith("rank ") else f"{type(e).__name__} in {where}"
    )


def collective_error(e: BaseException) -> bool:
    """An error from gloo or NCCL: a collective whose other side is gone."""
    dist_error = getattr(torch.distributed, "DistError", None)
    return (dist_error is not None and isinstance(e, dist_error)) or any(
        word in str(e) for word in ("gloo", "NCCL", "Connection reset by peer", "Connection closed by peer")
    )
