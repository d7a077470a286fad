"""One epoch of training steps: the loop's hot path.

Per batch: split it, forward (the first batch's output is checked), loss, backward; per
optimizer step: step, count it, leave its loss and gradient norm in the telemetry's buffers,
and look for commands. Nothing here builds a Python object per step or reads a device value
back to the host (but on the CPU, where ``.item()`` costs no sync and a NaN is caught before
its step): what the parts need is bound to locals once per epoch.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch

from tuiloop.engine import checkpoint as ckpt
from tuiloop.engine.batches import Batches
from tuiloop.engine.distributed import Ranks
from tuiloop.engine.first_batch import FirstBatch
from tuiloop.engine.objective import LossFunction, ModelLoss, count_tokens
from tuiloop.engine.options import Options
from tuiloop.engine.precision import Precision
from tuiloop.engine.progress import Progress
from tuiloop.engine.saving import Checkpoints
from tuiloop.engine.steering import Steering
from tuiloop.engine.step import Stepper
from tuiloop.engine.telemetry import StepTelemetry


class EpochLoop:
    """The steps of one epoch, from where :class:`Progress` stands (mid-epoch after a resume)."""

    def __init__(
        self,
        model: torch.nn.Module,
        ddp: Any,
        objective: LossFunction | ModelLoss,
        stepper: Stepper,
        scheduler: Any,
        batches: Batches,
        opt: Options,
        precision: Precision,
        ranks: Ranks,
        progress: Progress,
        telemetry: StepTelemetry,
        steering: Steering,
        checkpoints: Checkpoints,
        first_batch: FirstBatch,
    ) -> None:
        self.model = model  # what the steps call: compiled, DDP-wrapped
        self.objective = objective
        self.stepper = stepper
        self.step_scheduler = scheduler if opt.scheduler_interval == "step" else None
        self.batches = batches
        self.accumulate = opt.accumulate_grad_batches
        # Under DDP the micro-batches before a group's last skip the gradient all-reduce.
        self.no_sync = ddp.no_sync if ddp is not None and self.accumulate > 1 else None
        self.precision = precision
        self.distributed = ranks.distributed
        self.progress = progress
        self.telemetry = telemetry
        self.steering = steering
        self.checkpoints = checkpoints
        self.first_batch = first_batch

    def run(self) -> None:
        """Train the rest of the epoch ``progress.epoch + 1``, or until a stop; flush its telemetry."""
        model, objective, stepper = self.model, self.objective, self.stepper
        progress, telemetry, steering = self.progress, self.telemetry, self.steering
        step_scheduler = self.step_scheduler
        commands = steering.commands
        exact = telemetry.exact_nan_check
        distributed = self.distributed
        accumulate = self.accumulate
        autocast = self.precision.autocast()
        no_sync = self.no_sync
        batches = self.batches.steps()  # per epoch (on this rank), None if unknown
        value: Any  # the last micro-batch's loss: a float on the CPU, else a device tensor
        telemetry.start_epoch()
        model.train()
        if commands.pending or distributed:  # a command that came during validation or saving
            steering.handle()
            if steering.state == "stopping":
                return
        if progress.batch_in_epoch == 0 and self.batches.order_from_global_rng:
            progress.epoch_rng = ckpt.rng_state()
        stepper.optimizer.zero_grad(set_to_none=True)
        for batch in self.batches.epoch(progress.epoch, start=progress.batch_in_epoch, epoch_rng=progress.epoch_rng):
            args, kwargs, target = objective.split(batch)
            deferred = (
                no_sync is not None
                and stepper.micro + 1 < accumulate
                and (batches is None or progress.batch_in_epoch + stepper.micro + 1 < batches)
            )
            with no_sync() if deferred else contextlib.nullcontext():  # type: ignore[misc]  # deferred: no_sync is set
                with autocast:
                    if objective.problem is None:
                        output = self.first_batch.forward(args, kwargs, target)
                    else:
                        output = model(*args, **kwargs)
                    loss = objective.loss(output, target)
                if exact:  # on the CPU .item() costs no device sync: check before the step
                    value = loss.item()
                    if not math.isfinite(value):
                        telemetry.flush()
                        telemetry.non_finite(value, saved=self.checkpoints.save_last_good())
                else:
                    value = loss.detach()
                n = objective.count(batch, target)
                stepper.backward(loss, value, n)
            telemetry.samples += n
            telemetry.tokens += count_tokens(args, kwargs)
            if stepper.micro < accumulate:
                continue
            self._optimizer_step(value, step_scheduler)
            if distributed:
                steering.until_agree -= 1
                if steering.until_agree <= 0:
                    steering.agree()
            else:
                if time.perf_counter() >= telemetry.next_flush:
                    telemetry.flush_on_schedule()
                # Commands after the step, before the next batch is fetched: a dataset that draws
                # random numbers must not have drawn for a batch the checkpoint says is not done.
                if commands.pending:
                    steering.handle()
            if steering.state == "stopping":
                break
        else:
            if stepper.micro:  # the epoch's last, shorter group
                self._optimizer_step(value, step_scheduler)
        telemetry.flush()

    def _optimizer_step(self, value: Any, step_scheduler: Any) -> None:
        """Step on the group just accumulated; its loss and gradient norm wait in the telemetry's buffers."""
        stepper = self.stepper
        batches = stepper.micro
        group_loss, norm = stepper.step()
        if step_scheduler is not None:
            step_scheduler.step()
        self.progress.step += 1
        self.progress.batch_in_epoch += batches
        self.telemetry.losses.append(value if group_loss is None else group_loss)
        if norm is not None:
            self.telemetry.norms.append(norm)
        if self.telemetry.compiling:
            self.telemetry.first_compiled()
