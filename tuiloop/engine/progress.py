"""How far a run has come: the counters a checkpoint keeps and a resume goes on from.

One dataclass, as Lightning keeps its loops' progress (``loops/progress.py``): the loop moves it
forward, the step telemetry adds the epoch's losses to it, checkpoints save and restore it whole
(:meth:`Progress.state_dict`), and every other part reads where the run is from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Progress:
    """Completed epochs, the current epoch's batches and loss sums, and optimizer steps."""

    epoch: int = 0  # completed epochs
    batch_in_epoch: int = 0  # batches of the current epoch done (up to the last optimizer step)
    step: int = 0  # optimizer steps done
    epoch_loss_sum: float = 0.0  # the current epoch's step losses, for its train_loss
    epoch_loss_count: int = 0
    epoch_rng: dict[str, Any] | None = None  # RNG at the epoch's start, for a user's shuffling DataLoader

    def epoch_loss(self) -> float:
        """The mean step loss of the current epoch (its ``train_loss``)."""
        return self.epoch_loss_sum / max(self.epoch_loss_count, 1)

    def steps_in_epoch(self, accumulate: int) -> int:
        """Optimizer steps done in the current epoch (a last, shorter group of batches is one too)."""
        return -(-self.batch_in_epoch // accumulate)

    def at(self) -> str:
        """Where the run stands, as a sentence says it: 'epoch 8' at an epoch's end, else 'step 70 (epoch 9)'."""
        if self.batch_in_epoch == 0:
            return f"epoch {self.epoch}" if self.epoch else "the start"
        return f"step {self.step} (epoch {self.epoch + 1})"

    def end_epoch(self) -> None:
        """The current epoch is done: count it and start the next one from nothing."""
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self.epoch_loss_sum, self.epoch_loss_count = 0.0, 0
        self.epoch_rng = None

    def reshard(self, saved_world: int, world: int) -> None:
        """Go on from the same fraction of the epoch with another number of processes (each one's share changes)."""
        self.batch_in_epoch = self.batch_in_epoch * saved_world // world

    def state_dict(self) -> dict[str, Any]:
        """The counters under their checkpoint keys."""
        return {
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_loss_count": self.epoch_loss_count,
            "epoch_rng_state": self.epoch_rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (a checkpoint holds it among its other keys)."""
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        self.epoch_loss_sum, self.epoch_loss_count = state["epoch_loss_sum"], state["epoch_loss_count"]
        self.epoch_rng = state.get("epoch_rng_state")
