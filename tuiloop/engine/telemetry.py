"""What the steps report: their losses and gradient norms, buffered and emitted a few times a second.

The loop appends each optimizer step's loss (a float on the CPU, else a device tensor) to
:attr:`StepTelemetry.losses`, its gradient norm to :attr:`StepTelemetry.norms` and its samples
to :attr:`StepTelemetry.samples` (and :attr:`StepTelemetry.tokens`); nothing per step reads a value back to the host. A flush turns
them into one :class:`TrainSteps` event (one device sync on accelerators) and checks them: a
non-finite loss stops the run (:class:`NonFiniteLoss`), so do steps the 16-mixed grad scaler
skips without end; a torch.compile recompilation is reported.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, NoReturn

import torch

from tuiloop.engine.compiling import compilations
from tuiloop.engine.distributed import Ranks
from tuiloop.engine.events import Event, Message, TrainSteps
from tuiloop.engine.exceptions import NON_FINITE, NonFiniteLoss
from tuiloop.engine.options import MAX_SKIPPED_IN_A_ROW, Options
from tuiloop.engine.precision import Precision
from tuiloop.engine.progress import Progress


class StepTelemetry:
    """The step losses, gradient norms and throughput since the last flush, and the checks on them."""

    def __init__(
        self,
        progress: Progress,
        optimizer: torch.optim.Optimizer,
        precision: Precision,
        ranks: Ranks,
        device: torch.device,
        emit: Callable[[Event], None],
        opt: Options,
    ) -> None:
        self.progress = progress
        self.optimizer = optimizer
        self.scaler = precision.scaler
        self.ranks = ranks
        self.device = device
        self.emit = emit
        self.accumulate = opt.accumulate_grad_batches
        self.interval = opt.log_interval  # seconds between flushes
        # On the CPU .item() costs nothing, so a NaN is caught before its step; not in a
        # distributed run, where every rank must take every step (the flush catches it there).
        self.exact_nan_check = device.type == "cpu" and not ranks.distributed
        self.losses: list[Any] = []  # step losses since the last flush (floats on the CPU, else device tensors)
        self.norms: list[Any] = []  # total gradient norms since the last flush (device tensors)
        self.samples = 0  # samples trained on since the last flush
        self.tokens = 0  # of them, tokens of token sequences (tuiloop.engine.objective.count_tokens)
        self.first_step = 1  # the step of losses[0]
        self.last_flush = time.perf_counter()
        self.next_flush = 0.0  # when the log interval asks for the next flush
        self.skipped_in_a_row = 0
        self.compiling = bool(opt.compile)  # until the first step has compiled the model
        self.compiled_seen = -1  # torch.compile's frame count after the first step

    def start_epoch(self) -> None:
        """The epoch's steps start (again): the next loss is the next step's, the clock starts now."""
        self.first_step = self.progress.step + 1
        self.last_flush = time.perf_counter()
        self.next_flush = self.last_flush + self.interval
        self.samples = self.tokens = 0

    def restart_clock(self) -> None:
        """After a pause: the throughput counts from now."""
        self.last_flush = time.perf_counter()
        self.samples = self.tokens = 0

    def first_compiled(self) -> None:
        """After the first step of a compiled model: say it is compiled, and count its graphs."""
        self.compiling = False
        self.compiled_seen = compilations()
        self.emit(
            Message(
                "info",
                f"torch.compile: the model is compiled ({self.compiled_seen} graph(s)); later compilations are reported",
            )
        )

    def flush_on_schedule(self) -> None:
        """The flush the log interval asks for; the next one is due an interval after it."""
        self.flush()
        self.next_flush = self.last_flush + self.interval

    def flush(self) -> None:
        """Emit the buffered step losses and gradient norms as one event (one device sync on accelerators)."""
        buffer = self.losses
        if not buffer:
            return
        ranks = self.ranks
        if self.exact_nan_check:
            losses = [float(v) for v in buffer]
        elif ranks.distributed:  # the mean over ranks, the same list on every rank
            stacked = torch.stack([torch.as_tensor(v, device=self.device) for v in buffer]).float()
            losses = (ranks.sum_(stacked) / ranks.world_size).tolist()
        else:
            losses = torch.stack(buffer).float().tolist()
        norms = (
            torch.stack(self.norms).float().tolist() if self.norms else None
        )  # equal on every rank: DDP averaged the gradients
        buffer.clear()
        self.norms.clear()
        scaler = self.scaler
        now = time.perf_counter()
        elapsed = max(now - self.last_flush, 1e-9)
        rate = self.samples * ranks.world_size / elapsed
        tokens = self.tokens * ranks.world_size / elapsed if self.tokens else None
        self.last_flush, self.samples, self.tokens = now, 0, 0
        first = self.first_step
        self.first_step += len(losses)
        skipped = {i for i, g in enumerate(norms or []) if not math.isfinite(g)} if scaler is not None else set()
        kept = [v for i, v in enumerate(losses) if i not in skipped] if skipped else losses
        progress = self.progress
        progress.epoch_loss_sum += sum(kept)
        progress.epoch_loss_count += len(kept)
        self.emit(
            TrainSteps(
                progress.epoch + 1,
                first,
                losses,
                progress.steps_in_epoch(self.accumulate),
                self.optimizer.param_groups[0]["lr"],
                rate,
                grad_norms=norms,
                loss_scale=scaler.get_scale() if scaler is not None else None,
                skipped_steps=len(skipped),
                tokens_per_s=tokens,
            )
        )
        self._check_compilations()
        if scaler is not None:  # a skipped step is the scaler's business, unless they never end
            for i in range(len(losses)):
                self.skipped_in_a_row = self.skipped_in_a_row + 1 if i in skipped else 0
            if self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
                raise NonFiniteLoss(
                    f"the grad scaler skipped {self.skipped_in_a_row} steps in a row (loss {losses[-1]}, loss scale {scaler.get_scale():g}); training stopped: "
                    "the gradients are not finite for another reason than float16 overflow. Check the data for NaN/inf values, lower the learning rate, or use bf16-mixed"
                )
            return
        if not self.exact_nan_check and not all(map(math.isfinite, losses)):
            bad = next(i for i, v in enumerate(losses) if not math.isfinite(v))
            self.non_finite(losses[bad], saved=None, at_step=first + bad)

    def _check_compilations(self) -> None:
        """Warn when torch.compile compiled again since the last flush (each costs a first step's wait)."""
        if self.compiled_seen < 0:
            return
        now = compilations()
        if now > self.compiled_seen:
            self.compiled_seen = now
            self.emit(
                Message(
                    "warning",
                    f"torch.compile compiled the model again ({now} graphs so far): a new input shape or a changed Python value makes it recompile. "
                    "A last batch of another size does (drop_last = true avoids it).",
                )
            )

    def non_finite(self, value: float, saved: str | None, at_step: int | None = None) -> NoReturn:
        """Stop the run on a loss that is not finite; ``saved``: where the state before it is (in the run directory)."""
        step = at_step if at_step is not None else self.progress.step + 1
        if saved is not None:
            kept = f"the last good state (before step {step}) is saved in {saved}"
        else:
            kept = "the weights after it are not saved; the last good checkpoint is checkpoints/last.pt from the last finished epoch, if any"
        raise NonFiniteLoss(
            f"{NON_FINITE} {value} at step {step}; training stopped and {kept}. "
            "Lower the learning rate, check the data for NaN/inf values, or clip gradients."
        )
