"""Tracking a monitored metric: best value, improvement, and the early-stopping counter."""

from __future__ import annotations

import math
from typing import Any

from tuiloop.engine.exceptions import ResumeError

# Words that mark a metric that improves upwards (val_acc, val_f1, val_auroc, ...); anything else,
# a loss or an error, improves downwards. The one answer to "is higher better?" everywhere.
HIGHER_IS_BETTER = ("acc", "f1", "auc", "precision", "recall", "r2", "iou", "dice")


def higher_is_better(metric: str) -> bool:
    """True for accuracy-like metrics, False for losses and errors."""
    return any(word in metric.lower() for word in HIGHER_IS_BETTER)


def default_mode(metric: str) -> str:
    """``"max"`` for a metric that improves upwards, else ``"min"``."""
    return "max" if higher_is_better(metric) else "min"


class MetricMonitor:
    """Best value of one metric; ``counter`` counts checks without improvement.

    With ``patience`` it is early stopping: ``triggered`` once ``counter >= patience``.
    """

    def __init__(self, monitor: str, mode: str = "min", min_delta: float = 0.0, patience: int | None = None) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        self.monitor = monitor
        self.mode = mode
        self.min_delta = abs(min_delta)
        self.patience = patience
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.counter = 0

    def improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float, epoch: int) -> bool:
        """Record a check after ``epoch`` (counted from 1); True if it is a new best."""
        if self.improves(value):
            self.best, self.best_epoch, self.counter = value, epoch, 0
            return True
        self.counter += 1
        return False

    @property
    def triggered(self) -> bool:
        return self.patience is not None and self.counter >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "counter": self.counter,
        }

    def check_compatible(self, state: dict[str, Any], section: str) -> None:
        """Raise :class:`ResumeError` if a checkpoint's state tracks another metric or direction."""
        theirs = (state.get("monitor"), state.get("mode"))
        if theirs != (self.monitor, self.mode):
            raise ResumeError(
                f"the checkpoint's {section} state tracks {theirs[0]} ({theirs[1]}), but the spec monitors {self.monitor} ({self.mode}); "
                f"its best value and counter mean nothing for another metric. Resume with {section} monitor = {theirs[0]!r} and mode = {theirs[1]!r}, "
                "or start a new run."
            )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.counter = state["best"], state["best_epoch"], state["counter"]
