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
    if scheduler is None:
        return
    for child in getattr(scheduler, "_schedulers", None) or ():  # SequentialLR, ChainedScheduler
        _scale_scheduler(child, optimizer, factor)
    _scale_scheduler(scheduler, optimizer, factor)


def _scale_scheduler(scheduler: Any, optimizer: torch.optim.Optimizer, factor: float) -> None:
    for name in _SCHEDULER_LISTS:
        values = getattr(scheduler, name, None)
        if isinstance(values, list):
            setattr(scheduler, name, [v * factor for v in values])
    if isinstance(getattr(scheduler, "_last_lr", None), list):
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
