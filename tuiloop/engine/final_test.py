"""The test split, evaluated once when the run ends (completed, early-stopped or stopped by a
command), on the weights of ``best.pt``, as Lightning's ``trainer.test(ckpt_path="best")`` and
Keras' ``evaluate`` finish a run.

best.pt is read back from the run directory and checked against the SHA-256 its save recorded
before it is loaded; without a best.pt (``[checkpoint] best = false``, no run directory, no check
that improved) or with one that does not match its record, the weights the run ended with are
tested, and the :class:`~tuiloop.engine.events.Tested` event says which. In a distributed run rank
0 reads the file and sends its weights to every rank; then every rank evaluates its shard of the
split, in lockstep, with the loss and metrics that validation uses (exact across ranks).
Afterwards the model holds the weights that were tested.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from tuiloop.engine import checkpoint as ckpt
from tuiloop.engine.batches import Batches
from tuiloop.engine.distributed import Ranks
from tuiloop.engine.epoch_end import EpochEnd
from tuiloop.engine.events import Event, Message, Tested
from tuiloop.engine.exceptions import ResumeError
from tuiloop.engine.saving import Checkpoints

# how a run may end for its test split to be evaluated (not failed, forced or suspended to go on later)
TESTED_ENDINGS = ("completed", "early_stopped", "stopped")
BEST = "best.pt"


class FinalTest:
    """The Trainer's part that evaluates the test split at the end; :attr:`result` is its event."""

    def __init__(
        self,
        batches: Batches,
        model: torch.nn.Module,
        ends: EpochEnd,
        checkpoints: Checkpoints,
        ranks: Ranks,
        emit: Callable[[Event], None],
    ) -> None:
        self.batches = batches
        self.model = model  # the user's module (unwrapped): where best.pt's weights go
        self.ends = ends
        self.checkpoints = checkpoints
        self.ranks = ranks
        self.emit = emit
        self.result: Tested | None = None

    def run(self) -> Tested:
        """Load best.pt's weights (every rank), evaluate the split, emit and keep the event."""
        started = time.perf_counter()
        source = self._load_best()
        metrics = self.ends.evaluate(self.batches, "test_")
        progress = self.ends.progress
        name, epoch, step, sha = source or ("", progress.epoch, progress.step, None)
        self.result = Tested(
            name, epoch, step, metrics, self.batches.num_samples, time.perf_counter() - started, sha256=sha
        )
        self.emit(self.result)
        return self.result

    def _load_best(self) -> tuple[str, int, int, str | None] | None:
        """best.pt's weights in the model on every rank; (its path, epoch, step, SHA-256), or None
        (with a warning when a best.pt was expected) to test the final weights."""
        found: tuple[str, int, int, str | None] | None = None
        why = ""
        if self.ranks.is_main:
            try:
                found = self._read_best()
            except _NoBest as e:
                why = str(e)
        found, why = self.ranks.broadcast((found, why))
        if why:
            self.emit(Message("warning", f"{why}: the test split is evaluated on the weights the run ended with"))
        if found is not None:
            self.ranks.broadcast_tensors(list(ckpt.unwrap(self.model).state_dict().values()))
        return found

    def _read_best(self) -> tuple[str, int, int, str | None] | None:
        """Rank 0: best.pt read, checked against its recorded save and loaded into the model."""
        cp = self.checkpoints
        saved = cp.saves.get(BEST)
        if cp.run_dir is None or self.ends.best.best_epoch is None or saved is None:
            return None  # no best.pt of this run: [checkpoint] best = false, no run directory, or no check improved
        folder = cp.folder or ckpt.PathFolder(cp.run_dir / "checkpoints")
        try:
            data = folder.read_bytes(BEST)
        except OSError as e:
            raise _NoBest(f"{saved.path} cannot be read ({e.strerror or e})") from None
        digest = ckpt.sha256(data)
        if saved.sha256 is not None and digest != saved.sha256:
            raise _NoBest(
                f"{saved.path} is not the file this run saved there (its SHA-256 {digest[:12]}... is not the "
                f"{saved.sha256[:12]}... its save recorded at epoch {saved.epoch})"
            )
        try:
            state: dict[str, Any] = ckpt.load(data)
            ckpt.unwrap(self.model).load_state_dict(state["model_state_dict"])
        except (ResumeError, RuntimeError) as e:
            raise _NoBest(f"{saved.path} cannot be loaded: {e}") from None
        return saved.path, int(state["epoch"]), int(state["step"]), digest


class _NoBest(Exception):
    """best.pt was expected and cannot be tested: why."""
