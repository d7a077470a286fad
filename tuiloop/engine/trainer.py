"""The training loop: the seed's pattern, device-aware, commandable, resumable, cheap per step."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from tuiloop.engine import checkpoint as ckpt
from tuiloop.engine import fmt
from tuiloop.engine.batches import Batches, worker_died
from tuiloop.engine.commands import Commands
from tuiloop.engine.compiling import compilations, compile_model
from tuiloop.engine.device import device_name
from tuiloop.engine.distributed import SINGLE, Ranks
from tuiloop.engine.errors import NonFiniteLoss, SetupError
from tuiloop.engine.events import (
    EarlyStopUpdate,
    Event,
    Failed,
    Finished,
    LRChanged,
    Message,
    RunStarted,
    Starting,
    TrainSteps,
    Validated,
)
from tuiloop.engine.monitor import MetricMonitor, default_mode
from tuiloop.engine.objective import LossFunction, ModelLoss
from tuiloop.engine.options import MAX_SKIPPED_IN_A_ROW, Options
from tuiloop.engine.origin import describe_where, format_frames, user_frames
from tuiloop.engine.precision import Precision
from tuiloop.engine.problem import MetricTotals, check_batch, check_inputs, infer_problem, metric_names
from tuiloop.engine.saving import Saving
from tuiloop.engine.steering import Steering
from tuiloop.engine.step import Stepper

__all__ = ["Options", "Trainer"]

Sink = Callable[[Event], None]


PROBLEM_TEXT = {
    "multiclass": "multi-class classification",
    "binary": "binary classification",
    "multilabel": "multi-label classification",
    "regression": "regression",
    "model": "a model that computes its own loss",
    "other": "a problem tuiloop has no metric for",
}


class Trainer(Saving, Steering):
    """Runs training on objects; the spec's glue (:mod:`tuiloop.session.build`) builds one from a spec.

    ``run_dir`` is where ``checkpoints/`` go. The engine writes nothing else there: the full run
    directory (event log, control socket, summary) is the session's (``tuiloop.Trainer`` runs
    inside one when given a ``run_dir``).

    ``ranks`` places it in a distributed run (one process per rank, torchrun): the model is
    wrapped in DistributedDataParallel, the batches should be this rank's shard, and losses,
    metrics and decisions are shared between ranks.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        train: Batches,
        val: Batches | None,
        loss_fn: Callable[..., torch.Tensor] | str,
        optimizer: torch.optim.Optimizer,
        scheduler: Any = None,
        options: Options | None = None,
        device: torch.device | None = None,
        run_dir: Path | None = None,
        ranks: Ranks = SINGLE,
    ) -> None:
        self.device = device or train.device
        self.ranks = ranks
        opt = options or Options()
        monitor = opt.monitor or ("val_loss" if val is not None else "train_loss")
        self.opt = dataclasses.replace(opt, monitor=monitor, mode=opt.mode or default_mode(monitor))
        # Module.to moves parameters in place, so an optimizer built on them stays valid.
        model = model.to(self.device)
        self.precision = Precision(self.opt.precision, self.device)
        self._ddp: Any = None
        wrapped: torch.nn.Module = model
        if ranks.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self._ddp = wrapped = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.model = compile_model(wrapped, self.opt.compile, self.device) if self.opt.compile else wrapped
        # validation runs on the module itself in a distributed run: no collectives in its forward
        self._eval_model = model if ranks.distributed else self.model
        if loss_fn == "model":
            self.objective: LossFunction | ModelLoss = ModelLoss()
        else:
            self.objective = LossFunction(loss_fn.to(self.device) if isinstance(loss_fn, torch.nn.Module) else loss_fn)  # type: ignore[union-attr, arg-type]
        self.loss_fn = self.objective.loss_fn
        self.train_batches = train
        self.val_batches = val
        self.optimizer = optimizer
        self.scheduler = scheduler
        o = self.opt
        self.stepper = Stepper(
            model,
            optimizer,
            self.precision,
            o.accumulate_grad_batches,
            o.gradient_clip_val,
            o.gradient_clip_algorithm,
            o.log_grad_norm,
        )
        self.run_dir = Path(run_dir) if run_dir else None
        self.commands = Commands()
        self.sinks: list[Sink] = []
        self.best = MetricMonitor(self.opt.monitor, self.opt.mode)  # type: ignore[arg-type]
        self.es = self.opt.early_stopping
        self.plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)  # subclasses too
        # run state (all of it goes into checkpoints)
        self.epoch = 0  # completed epochs
        self.batch_in_epoch = 0  # batches of the current epoch done (up to the last optimizer step)
        self.step = 0  # optimizer steps done
        self.epoch_loss_sum = 0.0
        self.epoch_loss_count = 0
        self.epoch_rng: dict[str, Any] | None = None  # RNG at the epoch's start, for a user's shuffling DataLoader
        self.last_metrics: dict[str, float] = {}
        self.problem: str | None = None
        self.resumed_from: str | None = None
        self.announcements: list[Event] = []  # emitted right after RunStarted (e.g. settings a resume changed)
        self.session = ""  # set by the session that runs it: tells this start of the run from earlier ones
        self.state = "running"
        self.suspending = False  # a stop that frees the machine, to be resumed (status "suspended")
        self.stop_after_epoch = False
        self.lr_scale = 1.0  # what the - and + keys did to the spec's learning rate, all together
        self.ending = threading.Lock()  # a distributed run's failure: held by whoever tells it (a new one each run)
        self._stop_reason = ""
        self._buffer: list[Any] = []  # step losses since the last flush (floats on the CPU, else device tensors)
        self._norms: list[Any] = []  # total gradient norms since the last flush (device tensors)
        self._skipped_in_a_row = 0
        self._compiled_seen = -1  # torch.compile's frame count after the first step
        self._pending_best = False
        # On the CPU .item() costs nothing, so a NaN is caught before its step; not in a
        # distributed run, where every rank must take every step (the flush catches it there).
        self._exact_nan_check = self.device.type == "cpu" and not ranks.distributed
        # the distributed agreement's schedule (see Steering)
        self._until_agree = 1
        self._agreed_at, self._agreed_at_step = time.perf_counter(), 0
        self._next_flush = 0.0

    # ---- events -------------------------------------------------------------------------
    def subscribe(self, sink: Sink) -> None:
        """Call ``sink(event)`` for every event, in the training thread."""
        self.sinks.append(sink)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)

    # ---- the loop ------------------------------------------------------------------------
    def run(self) -> Finished:
        """Train until the epochs are done, early stopping triggers, or a stop command."""
        started = time.perf_counter()
        status, reason = "completed", f"{fmt.plural(self.opt.epochs, 'epoch')} done"
        self._announce()
        where = "setup"
        saved = False
        self.ending = threading.Lock()
        try:
            while self.epoch < self.opt.epochs:
                where = "training"
                self._train_epoch()
                if self.state == "stopping":
                    status, reason = (
                        ("suspended" if self.suspending else "stopped"),
                        self._stop_reason or "stopped by request",
                    )
                    break
                where = "validation"
                last_before_stop = (
                    self.stop_after_epoch and self.epoch + 1 < self.opt.epochs
                )  # `e`: validated, then stopped
                if (self.epoch + 1) % self.opt.val_every == 0 or last_before_stop:
                    self._check()
                elif self.scheduler is not None and self.opt.scheduler_interval == "epoch" and not self.plateau:
                    self._step_scheduler_epoch(None)
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                self.epoch_loss_sum, self.epoch_loss_count = 0.0, 0
                self.epoch_rng = None
                where = "saving checkpoints"
                self._epoch_checkpoints()
                if self.es is not None and self.es.triggered:
                    status = "early_stopped"
                    reason = f"{self.es.monitor} did not improve for {self.es.patience} checks"
                    break
                if self.stop_after_epoch and self.epoch < self.opt.epochs:
                    status, reason = "stopped", f"stopped after epoch {self.epoch}, as asked"
                    saved = True  # the epoch's checkpoints, last.pt among them, were just written
                    break
            else:
                self.batch_in_epoch = 0
            if status == "suspended" or (status == "stopped" and self.opt.save_last and not saved):
                self.save("last")
        except NonFiniteLoss as e:
            status, reason = "failed", str(e).split(";")[0]  # the summary's reason: what happened, not the advice
            self.emit(Message("error", str(e)))
        except SetupError as e:
            status, reason = "failed", "setup error"
            self.emit(Failed(str(e), f"{where}, first batch", ""))
        except Exception as e:
            if self._stop_reason and worker_died(e):  # the same Ctrl+C reached a DataLoader worker
                status, reason = "stopped", self._stop_reason
                self.emit(Message("warning", f"a DataLoader worker ended with the interrupt ({e}); stopping as asked"))
                if self.opt.save_last:
                    self.save("last")
            else:
                failed = self._failure(e, where)
                if self.ranks.distributed:  # the launcher's SIGTERM (another rank failed) may be telling
                    self.ending.acquire()  # it from the signal thread, then ending the process: wait for that
                status, reason = (
                    "failed",
                    failed.error.split(":")[0] + " failed"
                    if failed.error.startswith("rank ")
                    else f"{type(e).__name__} in {where}",
                )
                self.emit(failed)
                self._save_after_crash()
        finally:
            self._close_loaders()
        finished = Finished(
            status,
            reason,
            self.epoch,
            self.step,
            self.best.best,
            self.best.best_epoch,
            self.opt.monitor,
            time.perf_counter() - started,
        )
        self.emit(finished)
        return finished

    def _failure(self, e: Exception, where: str) -> Failed:
        """What failed and where. In a distributed run a rank leaves its error for rank 0, and
        rank 0 reports the rank that failed first (its own error may only be the echo of it)."""
        failed = Failed(
            f"{type(e).__name__}: {e}",
            describe_where(e, where, self.epoch + 1, self.step + 1),
            traceback.format_exc(),
            format_frames(user_frames(e)),
        )
        if not self.ranks.distributed:
            return failed
        if not self.ranks.is_main:
            self.ranks.report_failure(
                {
                    "error": failed.error,
                    "where": failed.where,
                    "traceback": failed.traceback,
                    "user_frames": failed.user_frames,
                }
            )
            return failed
        peer = self.ranks.peer_failure(wait_s=1.0)
        if peer is None:
            if _collective_error(e):  # the other side of a collective is gone without a word
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

    def _announce(self) -> None:
        train_size = self.train_batches.num_samples
        self.emit(
            RunStarted(
                run_name=self.opt.run_name,
                run_dir=str(self.run_dir or ""),
                device=str(self.device),
                device_name=device_name(self.device),
                epochs=self.opt.epochs,
                steps_per_epoch=self.steps_per_epoch(),
                batch_size=self.train_batches.batch_size,
                train_size=train_size,
                val_size=self.val_batches.num_samples if self.val_batches else None,
                problem=self.problem or "unknown",
                metrics=self._metrics_available(),
                monitor=self.opt.monitor,
                mode=self.opt.mode,
                patience=self.es.patience if self.es else None,
                num_params=sum(p.numel() for p in self.model.parameters()),
                start_epoch=self.epoch,
                start_step=self.step,
                resumed_from=self.resumed_from,
                pid=os.getpid(),
                session=self.session,
                precision=self.opt.precision,
                accumulate_grad_batches=self.opt.accumulate_grad_batches,
                world_size=self.ranks.world_size,
                backend=self.ranks.backend,
                nodes=list(self.ranks.nodes),
            )
        )
        for event in self.announcements:
            self.emit(event)
        self.announcements = []

    def steps_per_epoch(self) -> int | None:
        """Optimizer steps per epoch (a last, shorter group of batches is a step too)."""
        batches = self.train_batches.steps()
        return None if batches is None else -(-batches // self.opt.accumulate_grad_batches)

    def _metrics_available(self) -> list[str]:
        if self.val_batches is None:
            return ["train_loss"]
        return ["train_loss", "val_loss", *metric_names(self.problem or "")]

    def _train_epoch(self) -> None:
        model, objective, stepper = self.model, self.objective, self.stepper
        step_scheduler = self.scheduler if self.opt.scheduler_interval == "step" else None
        commands = self.commands
        exact = self._exact_nan_check
        distributed = self.ranks.distributed
        accumulate = self.opt.accumulate_grad_batches
        autocast = self.precision.autocast()
        interval = self.opt.log_interval
        no_sync = self._ddp.no_sync if self._ddp is not None and accumulate > 1 else None
        batches = self.train_batches.steps()  # per epoch (on this rank), None if unknown
        self._first_step = self.step + 1
        self._last_flush_time = time.perf_counter()
        self._next_flush = self._last_flush_time + interval
        self._samples = 0
        model.train()
        if commands.pending or distributed:  # a command that came during validation or saving
            self._handle_commands()
            if self.state == "stopping":
                return
        if self.batch_in_epoch == 0 and self.train_batches.order_from_global_rng:
            self.epoch_rng = ckpt.rng_state()
        self.optimizer.zero_grad(set_to_none=True)
        for batch in self.train_batches.epoch(self.epoch, start=self.batch_in_epoch, epoch_rng=self.epoch_rng):
            args, kwargs, target = objective.split(batch)
            # Under DDP the micro-batches before a group's last skip the gradient all-reduce.
            deferred = (
                no_sync is not None
                and stepper.micro + 1 < accumulate
                and (batches is None or self.batch_in_epoch + stepper.micro + 1 < batches)
            )
            with no_sync() if deferred else contextlib.nullcontext():
                with autocast:
                    if self.problem is None:
                        output = self._first_forward(args, kwargs)
                        self._first_batch(output, target)  # before the loss: its own error would be less clear
                    else:
                        output = model(*args, **kwargs)
                    loss = objective.loss(output, target)
                if exact:  # on the CPU .item() costs no device sync: check before the step
                    value = loss.item()
                    if not math.isfinite(value):
                        self._flush()
                        self._non_finite(value, saved=self._save_last_good())
                else:
                    value = loss.detach()
                n = objective.count(batch, target)
                stepper.backward(loss, value, n)
            self._samples += n
            if stepper.micro < accumulate:
                continue
            self._optimizer_step(value, step_scheduler)
            if distributed:
                self._until_agree -= 1
                if self._until_agree <= 0:
                    self._agree()
            else:
                if time.perf_counter() >= self._next_flush:
                    self._flush()
                    self._next_flush = self._last_flush_time + interval
                # Commands after the step, before the next batch is fetched: a dataset that draws
                # random numbers must not have drawn for a batch the checkpoint says is not done.
                if commands.pending:
                    self._handle_commands()
            if self.state == "stopping":
                break
        else:
            if stepper.micro:  # the epoch's last, shorter group
                self._optimizer_step(value, step_scheduler)
        self._flush()

    def _optimizer_step(self, value: Any, step_scheduler: Any) -> None:
        """Step on the group just accumulated; its loss and gradient norm wait in the buffers."""
        batches = self.stepper.micro
        group_loss, norm = self.stepper.step()
        if step_scheduler is not None:
            step_scheduler.step()
        self.step += 1
        self.batch_in_epoch += batches
        self._buffer.append(value if group_loss is None else group_loss)
        if norm is not None:
            self._norms.append(norm)
        if self._compiled_seen < 0 and self.opt.compile:
            self._compiled_seen = compilations()
            self.emit(
                Message(
                    "info",
                    f"torch.compile: the model is compiled ({self._compiled_seen} graph(s)); later compilations are reported",
                )
            )

    def _first_forward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The first forward pass, with what PyTorch's own error leaves out (a dtype mismatch)."""
        if self.opt.compile:
            self.emit(Starting("compiling the model with torch.compile: the first step takes a while"))
            self.emit(Message("info", "torch.compile: compiling the model; the first step takes a while"))
        try:
            return self.model(*args, **kwargs)
        except RuntimeError as e:
            problem = check_inputs(self.model, args, kwargs)
            if problem:
                raise SetupError(problem) from e
            raise

    def _first_batch(self, output: Any, target: Any) -> None:
        if self.objective.model_computes_loss:
            self.problem = "model"
        else:
            self.problem = infer_problem(self.loss_fn, output) if isinstance(output, torch.Tensor) else "other"
            for text in check_batch(self.loss_fn, output, target, self.problem):
                self.emit(Message("warning", text))
        available = self._metrics_available()
        # [checkpoint] monitor defaults to the early-stopping one: name the key the user wrote first
        for name, monitor in (
            ("[early_stopping] monitor", self.es.monitor if self.es else None),
            ("[scheduler] monitor", self.opt.scheduler_monitor),
            ("[checkpoint] monitor", self.opt.monitor),
        ):
            if monitor is not None and monitor not in available:
                if self.val_batches is None:
                    raise SetupError(
                        f"{name} = {monitor!r} needs a validation split, and the data has none. Monitor train_loss, or return (train, val) from the data function."
                    )
                raise SetupError(
                    f"{name} = {monitor!r} is not reported for this {self.problem} problem. Use one of: {', '.join(available)}."
                )
        what = PROBLEM_TEXT.get(self.problem, self.problem)
        source = "the model's own loss" if self.objective.model_computes_loss else type(self.loss_fn).__name__
        self.emit(Message("info", f"{what} ({source}); metrics: {', '.join(available)}"))

    def _flush(self) -> None:
        """Emit the buffered step losses and gradient norms as one event (one device sync on accelerators)."""
        buffer = self._buffer
        if not buffer:
            return
        if self._exact_nan_check:
            losses = [float(v) for v in buffer]
        elif self.ranks.distributed:  # the mean over ranks, the same list on every rank
            stacked = torch.stack([torch.as_tensor(v, device=self.device) for v in buffer]).float()
            losses = (self.ranks.sum_(stacked) / self.ranks.world_size).tolist()
        else:
            losses = torch.stack(buffer).float().tolist()
        norms = (
            torch.stack(self._norms).float().tolist() if self._norms else None
        )  # equal on every rank: DDP averaged the gradients
        buffer.clear()
        self._norms.clear()
        scaler = self.precision.scaler
        now = time.perf_counter()
        rate = self._samples * self.ranks.world_size / max(now - self._last_flush_time, 1e-9)
        self._last_flush_time, self._samples = now, 0
        first = self._first_step
        self._first_step += len(losses)
        skipped = {i for i, g in enumerate(norms or []) if not math.isfinite(g)} if scaler is not None else set()
        kept = [v for i, v in enumerate(losses) if i not in skipped] if skipped else losses
        self.epoch_loss_sum += sum(kept)
        self.epoch_loss_count += len(kept)
        steps_in_epoch = -(-self.batch_in_epoch // self.opt.accumulate_grad_batches)
        self.emit(
            TrainSteps(
                self.epoch + 1,
                first,
                losses,
                steps_in_epoch,
                self.optimizer.param_groups[0]["lr"],
                rate,
                grad_norms=norms,
                loss_scale=scaler.get_scale() if scaler is not None else None,
                skipped_steps=len(skipped),
            )
        )
        self._check_compilations()
        if scaler is not None:  # a skipped step is the scaler's business, unless they never end
            for i in range(len(losses)):
                self._skipped_in_a_row = self._skipped_in_a_row + 1 if i in skipped else 0
            if self._skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
                raise NonFiniteLoss(
                    f"the grad scaler skipped {self._skipped_in_a_row} steps in a row (loss {losses[-1]}, loss scale {scaler.get_scale():g}); training stopped: "
                    "the gradients are not finite for another reason than float16 overflow. Check the data for NaN/inf values, lower the learning rate, or use bf16-mixed"
                )
            return
        if not self._exact_nan_check and not all(map(math.isfinite, losses)):
            bad = next(i for i, v in enumerate(losses) if not math.isfinite(v))
            self._non_finite(losses[bad], saved=None, at_step=first + bad)

    def _check_compilations(self) -> None:
        """Warn when torch.compile compiled again since the last flush (each costs a first step's wait)."""
        if self._compiled_seen < 0:
            return
        now = compilations()
        if now > self._compiled_seen:
            self._compiled_seen = now
            self.emit(
                Message(
                    "warning",
                    f"torch.compile compiled the model again ({now} graphs so far): a new input shape or a changed Python value makes it recompile. "
                    "A last batch of another size does (drop_last = true avoids it).",
                )
            )

    def _non_finite(self, value: float, saved: Path | None, at_step: int | None = None) -> None:
        step = at_step if at_step is not None else self.step + 1
        if saved is not None:
            kept = f"the last good state (before step {step}) is saved in {saved.relative_to(self.run_dir)}"  # type: ignore[arg-type]
        else:
            kept = "the weights after it are not saved; the last good checkpoint is checkpoints/last.pt from the last finished epoch, if any"
        raise NonFiniteLoss(
            f"the training loss became {value} at step {step}; training stopped and {kept}. "
            "Lower the learning rate, check the data for NaN/inf values, or clip gradients."
        )

    def _check(self) -> None:
        """The end-of-epoch check: validation (or the train loss alone), best, early stopping, scheduler."""
        started = time.perf_counter()
        epoch = self.epoch + 1
        metrics = {"train_loss": self.epoch_loss_sum / max(self.epoch_loss_count, 1)}
        if self.val_batches is not None:
            metrics.update(self._validate())
        self.last_metrics = metrics
        is_best = self.best.update(metrics[self.opt.monitor], epoch)
        self.emit(Validated(epoch, self.step, metrics, is_best, time.perf_counter() - started))
        if self.es is not None:
            value = metrics[self.es.monitor]
            self.es.update(value, epoch)
            self.emit(
                EarlyStopUpdate(
                    epoch,
                    self.es.monitor,
                    value,
                    self.es.best,
                    self.es.counter,
                    self.es.patience or 0,
                    self.es.triggered,
                )
            )
        self._step_scheduler_epoch(metrics)
        self._pending_best = is_best

    def _validate(self) -> dict[str, float]:
        model, objective = self._eval_model, self.objective
        model.eval()
        totals = MetricTotals(self.problem or "other", self.loss_fn, self.device)
        with torch.inference_mode(), self.precision.autocast():
            for batch in self.val_batches.epoch(0):  # type: ignore[union-attr]
                args, kwargs, target = objective.split(batch)
                output = model(*args, **kwargs)
                totals.add(objective.loss(output, target), output, target, objective.count(batch, target))
        model.train()
        return totals.result(self.ranks)

    def _step_scheduler_epoch(self, metrics: dict[str, float] | None) -> None:
        if self.scheduler is None or self.opt.scheduler_interval != "epoch":
            return
        before = self.optimizer.param_groups[0]["lr"]
        if self.plateau:
            if metrics is None:
                return
            self.scheduler.step(metrics[self.opt.scheduler_monitor or self.opt.monitor])
        else:
            self.scheduler.step()
        after = self.optimizer.param_groups[0]["lr"]
        if after != before:
            self.emit(LRChanged(self.epoch + 1, self.step, after, before))

    def _epoch_checkpoints(self) -> None:
        tags = []
        if self.opt.save_best and self._pending_best:
            tags.append("best")
        self._pending_best = False
        if self.opt.every_n_epochs and self.epoch % self.opt.every_n_epochs == 0:
            tags.append("periodic")
        if self.opt.save_last:
            tags.append("last")
        self.save(*tags)

    def _close_loaders(self) -> None:
        for batches in (self.train_batches, self.val_batches):
            if batches is not None:
                batches.close()


def _collective_error(e: BaseException) -> bool:
    """An error from gloo or NCCL: a collective whose other side is gone."""
    dist_error = getattr(torch.distributed, "DistError", None)
    return (dist_error is not None and isinstance(e, dist_error)) or any(
        word in str(e) for word in ("gloo", "NCCL", "Connection reset by peer", "Connection closed by peer")
    )
