"""Changing the learning rate of a running optimizer in a way its scheduler keeps."""

from __future__ import annotations

from typing import Any

import torch

# Per-group values some schedulers derive the learning rate from (OneCycleLR keeps all three).
_GROUP_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")
# Per-group lists schedulers keep as attributes (LRScheduler.base_lrs, CyclicLR.max_lrs).
_SCHEDULER_LISTS = ("base_lrs", "max_lrs")


def scale_lr(optimizer: torch.optim.Optimizer, scheduler: Any, factor: float) -> None:
    """Multiply every parameter group's learning rate by ``factor`` from the next step on.

    The scheduler's base values are scaled too, so its schedule goes on from the new level
    instead of pulling the rate back (a cosine decays from the scaled peak).
    """
    for group in optimizer.param_groups:
        for key in _GROUP_KEYS:
            if isinstance(group.get(key), (int, float)):
                group[key] = group[key] * factor
    if scheduler is not None:
        _scale_scheduler(scheduler, optimizer, factor)


class Joined:
    """Several optimizers and their schedulers as the one optimizer and scheduler that
    :func:`scale_lr` scales (a Lightning module may configure several): the groups of every
    optimizer, and every scheduler, each keeping its own optimizer's rates."""

    def __init__(self, optimizers: list[Any], schedulers: list[Any]) -> None:
        self.optimizers = optimizers
        self._schedulers = [s for s in schedulers if s is not None]  # as SequentialLR names its own

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]


def _scale_scheduler(scheduler: Any, optimizer: Any, factor: float) -> None:
    for child in getattr(scheduler, "_schedulers", None) or ():  # SequentialLR, ChainedScheduler, Joined
        _scale_scheduler(child, optimizer, factor)
    for name in _SCHEDULER_LISTS:
        values = getattr(scheduler, name, None)
        if isinstance(values, list):
            setattr(scheduler, name, [v * factor for v in values])
    if isinstance(getattr(scheduler, "_last_lr", None), list):
        own = getattr(scheduler, "optimizer", None) or optimizer  # a scheduler of one of several optimizers
        scheduler._last_lr = [group["lr"] for group in own.param_groups]
