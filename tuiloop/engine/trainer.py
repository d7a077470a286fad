"""The training loop on your objects: PyTorch's plain loop, device-aware, steerable, resumable, cheap per step.

The loop is the one every PyTorch tutorial writes (zero_grad, forward, loss, backward, step;
validation under ``eval()`` and ``inference_mode()``; a scheduler, early stopping, the best and
the last checkpoint), with what the frameworks are known to get wrong done right. :class:`Trainer`
runs it (:meth:`Trainer.loop`: epochs until done, stopped or failed) and owns its parts, each in
a module of its own and given what it uses:

* :class:`~tuiloop.engine.epoch_loop.EpochLoop`: one epoch's steps, the hot path;
* :class:`~tuiloop.engine.progress.Progress`: the counters a checkpoint keeps (epoch, step, ...);
* :class:`~tuiloop.engine.step.Stepper`: backward, accumulation, clipping and the optimizer step;
* :class:`~tuiloop.engine.telemetry.StepTelemetry`: the steps' losses, emitted a few times a
  second, and the NaN check;
* :class:`~tuiloop.engine.first_batch.FirstBatch`: what the first batch shows (the problem, the metrics);
* :class:`~tuiloop.engine.epoch_end.EpochEnd`: validation, the best value, early stopping and
  the epoch's scheduler step;
* :class:`~tuiloop.engine.steering.Steering`: the commands obeyed between steps;
* :class:`~tuiloop.engine.saving.Checkpoints`: writing checkpoints and resuming from one;
* :class:`~tuiloop.engine.final_test.FinalTest`: the test split, evaluated on best.pt at the end;
* :mod:`~tuiloop.engine.failure`: what failed and where, across ranks.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn.parallel import DistributedDataParallel

from tuiloop.engine import checkpoint as ckpt
from tuiloop.engine import fmt
from tuiloop.engine.announce import run_started
from tuiloop.engine.batches import Batches, worker_died
from tuiloop.engine.best import default_mode
from tuiloop.engine.commands import Commands
from tuiloop.engine.compiling import compile_model
from tuiloop.engine.distributed import SINGLE, Ranks
from tuiloop.engine.epoch_end import EpochEnd
from tuiloop.engine.epoch_loop import EpochLoop
from tuiloop.engine.events import Event, Failed, Finished, Message, Tested
from tuiloop.engine.exceptions import NonFiniteLoss, SetupError, StorageError
from tuiloop.engine.failure import failure_reason, failure_report
from tuiloop.engine.final_test import TESTED_ENDINGS, FinalTest
from tuiloop.engine.first_batch import FirstBatch
from tuiloop.engine.live import Live
from tuiloop.engine.metrics import MetricSet
from tuiloop.engine.objective import LossFunction, ModelLoss
from tuiloop.engine.options import Options
from tuiloop.engine.precision import Precision
from tuiloop.engine.problem import reported_metrics
from tuiloop.engine.progress import Progress
from tuiloop.engine.saving import Checkpoints
from tuiloop.engine.steering import Steering
from tuiloop.engine.step import Stepper
from tuiloop.engine.telemetry import StepTelemetry

__all__ = ["Options", "Trainer"]

Sink = Callable[[Event], None]


class Trainer:
    """Runs training on objects; the spec's glue (:mod:`tuiloop.runner.build`) builds one from a spec.

    ``run_dir`` is where ``checkpoints/`` go. The engine writes nothing else there: the full run
    directory (event log, control socket, summary) is the session's (``tuiloop.Trainer`` runs
    inside one when given a ``run_dir``).

    ``ranks`` places it in a distributed run (one process per rank, torchrun): the model is
    wrapped in DistributedDataParallel, the batches should be this rank's shard, and losses,
    metrics and decisions are shared between ranks.

    ``metrics`` maps a name to a metric of your choice, reported as ``val_<name>``: an object with
    update/compute/reset (a torchmetrics ``Metric``) or a function ``(outputs, targets) -> tensor``
    (:mod:`tuiloop.engine.metrics`). ``test``: a split evaluated once when the run ends, on best.pt
    (:mod:`tuiloop.engine.final_test`), reported as ``test_loss`` and ``test_<name>``.
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
        metrics: Mapping[str, Any] | None = None,
        test: Batches | None = None,
    ) -> None:
        self.device = device = device or train.device
        self.ranks = ranks
        if why := train.empty():
            raise SetupError(f"the training data is empty ({why}); training needs at least one batch")
        self.announcements: list[Event] = []  # emitted right after RunStarted (e.g. settings a resume changed)
        val, test = self._unless_empty(val, "validation"), self._unless_empty(test, "test")
        opt = options or Options()
        # Module.to moves parameters in place, so an optimizer built on them stays valid.
        model = model.to(device)
        self.metrics = user = MetricSet(metrics or {}, device, ranks)
        self.modes = {f"{p}{name}": m for name, m in user.modes().items() for p in ("val_", "test_")}
        monitor = opt.monitor or ("val_loss" if val is not None else "train_loss")
        mode = opt.mode or self.modes.get(monitor) or default_mode(monitor)
        self.opt = o = dataclasses.replace(opt, monitor=monitor, mode=mode)
        self.precision = precision = Precision(o.precision, device)
        self._ddp: Any = None
        wrapped: torch.nn.Module = model
        if ranks.distributed:
            self._ddp = wrapped = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.model = compile_model(wrapped, o.compile, device) if o.compile else wrapped
        if loss_fn == "model":
            self.objective: LossFunction | ModelLoss = ModelLoss()
        else:
            loss = loss_fn.to(device) if isinstance(loss_fn, torch.nn.Module) else loss_fn
            self.objective = LossFunction(loss)  # type: ignore[arg-type]  # the spec resolved any other name
        self.loss_fn = self.objective.loss_fn
        self.train_batches = train
        self.val_batches = val
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.commands = Commands()
        self.sinks: list[Sink] = []
        self.resumed_from: str | None = None
        self.session = ""  # set by the session that runs it: tells this start of the run from earlier ones
        self.ending = threading.Lock()  # a distributed run's failure: held by whoever tells it (a new one each run)
        # The parts of the loop, each given what it uses.
        emit, objective = self.emit, self.objective
        self.progress = progress = Progress()
        self.stepper = stepper = Stepper(
            model,
            optimizer,
            precision,
            o.accumulate_grad_batches,
            o.gradient_clip_val,
            o.gradient_clip_algorithm,
            o.log_grad_norm,
        )
        self.telemetry = telemetry = StepTelemetry(progress, optimizer, precision, ranks, device, emit, o)
        self.steering = steering = Steering(
            self.commands, ranks, device, progress, telemetry, optimizer, scheduler, emit, self.save
        )
        evaluated = model if ranks.distributed else self.model  # validation: no collectives in its forward
        self.ends = ends = EpochEnd(
            o, progress, objective, evaluated, val, precision, ranks, device, optimizer, scheduler, emit, user
        )
        self.checkpoints = Checkpoints(
            self.model, optimizer, scheduler, stepper, objective, progress, ends, steering, ranks, emit, o.save_last
        )
        self.checkpoints.run_dir = Path(run_dir) if run_dir else None
        self.final_test = FinalTest(test, evaluated, ends, self.checkpoints, ranks, emit) if test is not None else None
        self.live = Live(o, stepper, telemetry, self.checkpoints, ends, progress, emit)
        steering.change = self.live.change
        self.checkpoints.live = self.live
        first_batch = FirstBatch(self.model, objective, o, val is not None, emit, user)
        self.epoch_loop = EpochLoop(
            self.model,
            self._ddp,
            objective,
            stepper,
            scheduler,
            train,
            o,
            precision,
            ranks,
            progress,
            telemetry,
            steering,
            self.checkpoints,
            first_batch,
        )
        # the monitors, read by the session (EpochEnd's; never replaced)
        self.best, self.es, self.plateau = ends.best, ends.es, ends.plateau

    # ---- where the run is (read by the session and by callers) -------------------------------
    @property
    def epoch(self) -> int:
        """Completed epochs."""
        return self.progress.epoch

    @property
    def step(self) -> int:
        """Optimizer steps done."""
        return self.progress.step

    @property
    def last_metrics(self) -> dict[str, float]:
        """The metrics of the last check (train_loss, val_loss, ...)."""
        return self.ends.last_metrics

    @property
    def lr_scale(self) -> float:
        """What the - and + keys did to the spec's learning rate, all together (kept in checkpoints)."""
        return self.steering.lr_scale

    @lr_scale.setter
    def lr_scale(self, value: float) -> None:
        self.steering.lr_scale = value

    @property
    def run_dir(self) -> Path | None:
        """Where ``checkpoints/`` go (None: nowhere); the session sets it to the run directory it trains in."""
        return self.checkpoints.run_dir

    @run_dir.setter
    def run_dir(self, path: Path | None) -> None:
        self.checkpoints.run_dir = path

    # ---- events and commands ------------------------------------------------------------------
    def subscribe(self, sink: Sink) -> None:
        """Call ``sink(event)`` for every event, in the training thread."""
        self.sinks.append(sink)

    def emit(self, event: Event) -> None:
        """Hand ``event`` to every sink, in the order they subscribed (the parts emit through it)."""
        for sink in self.sinks:
            sink(event)

    def request_stop(self, reason: str) -> None:
        """Ask the loop to stop at the next step boundary (used by signal handlers)."""
        self.steering.request_stop(reason)

    # ---- checkpoints ----------------------------------------------------------------------------
    def save(self, *tags: str) -> Path | None:
        """Write checkpoints of the current state (best, last, periodic, manual); see :meth:`~tuiloop.engine.saving.Checkpoints.save`."""
        return self.checkpoints.save(*tags)

    def state_dict(self, rng_states: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A complete, weights_only-loadable checkpoint of the run (``rng_states``: every rank's)."""
        return self.checkpoints.state_dict(rng_states)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore everything :meth:`state_dict` saved, for an exact resume (a
        :class:`~tuiloop.engine.exceptions.ResumeError` when the checkpoint is not this run's)."""
        inexact = self.checkpoints.load_state_dict(state)
        if inexact:
            self.announcements.append(Message("warning", inexact))
            warnings.warn(inexact, stacklevel=2)

    def resume(self, path: Path, data: bytes | None = None) -> None:
        """Continue from a checkpoint file written by this engine (``data``: its bytes, already
        read and checked by the caller). A file that is not one raises ResumeError saying why."""
        # On the CPU: RNG states must stay CPU tensors; load_state_dict moves the rest.
        self.load_state_dict(ckpt.load(data if data is not None else path, map_location="cpu"))
        self.resumed_from = str(path)
        self.checkpoints.restored(Path(path))

    # ---- the loop ------------------------------------------------------------------------------
    def run(self) -> Finished:
        """Train until the epochs are done, early stopping triggers, or a stop command."""
        return self.loop()

    def loop(self) -> Finished:
        """The training loop itself: what :meth:`run` does here (``tuiloop.Trainer.run`` opens a run
        directory around it). A failure in training ends it with a Failed event, not an exception."""
        progress, steering, ends = self.progress, self.steering, self.ends
        started = time.perf_counter()
        status, reason = "completed", f"{fmt.plural(self.opt.epochs, 'epoch')} done"
        self._announce()
        where = "setup"
        saved = False
        self.ending = threading.Lock()
        try:
            while progress.epoch < self.opt.epochs:
                where = "training"
                self.epoch_loop.run()
                if progress.batch_in_epoch == 0 and steering.state != "stopping":  # an iterable split
                    raise SetupError(f"the training data gave no batch in epoch {progress.epoch + 1}")
                if steering.state == "stopping":
                    status = "suspended" if steering.suspending else "stopped"
                    reason = steering.stop_reason or "stopped by request"
                    break
                where = "validation"
                ends.end(stop_after=steering.stop_after_epoch)  # `e`: validated, then stopped
                progress.end_epoch()
                where = "saving checkpoints"
                self.save(*ends.checkpoint_tags())
                early = ends.early_stopped
                if early:
                    status, reason = "early_stopped", early
                    break
                if steering.stop_after_epoch and progress.epoch < self.opt.epochs:
                    status, reason = "stopped", f"stopped after epoch {progress.epoch}, as asked"
                    saved = True  # the epoch's checkpoints, last.pt among them, were just written
                    break
            else:
                progress.batch_in_epoch = 0
                reason = f"{fmt.plural(self.opt.epochs, 'epoch')} done"
            if status == "suspended" or (status == "stopped" and self.opt.save_last and not saved):
                self.save("last")
            if self.final_test is not None and status in TESTED_ENDINGS:
                where = "testing"
                self.final_test.run()
        except NonFiniteLoss as e:
            status, reason = "failed", str(e).split(";")[0]  # the summary's reason: what happened, not the advice
            self.emit(Message("error", str(e)))
        except SetupError as e:
            status, reason = "failed", "setup error"
            self.emit(Failed(str(e), f"{where}, first batch", ""))
        except StorageError as e:  # a full disk or a read-only run directory: no traceback, and no
            status, reason = "failed", str(e)  # save after it (it would meet the same disk)
            self.emit(Failed(e.sentence(progress.at(), self.checkpoints.safe(e)), where, ""))
        except (Exception, SystemExit) as e:  # sys.exit() in the user's code fails the run as an exception does
            if steering.stop_reason and worker_died(e):  # the same Ctrl+C reached a DataLoader worker
                status, reason = "stopped", steering.stop_reason
                self.emit(Message("warning", f"a DataLoader worker ended with the interrupt ({e}); stopping as asked"))
                if self.opt.save_last:
                    self.save("last")
            else:
                failed = failure_report(e, where, progress.epoch + 1, progress.step + 1, self.ranks)
                if self.ranks.distributed:  # the launcher's SIGTERM (another rank failed) may be telling
                    self.ending.acquire()  # it from the signal thread, then ending the process: wait for that
                status, reason = "failed", failure_reason(failed, e, where)
                self.emit(failed)
                self.checkpoints.save_after_crash()
        finally:
            self._close_loaders()
        best = ends.best
        finished = Finished(
            status,
            reason,
            progress.epoch,
            progress.step,
            best.best,
            best.best_epoch,
            self.opt.monitor,
            time.perf_counter() - started,
        )
        self.emit(finished)
        return finished

    def _announce(self) -> None:
        self.emit(run_started(self))
        for event in self.announcements:
            self.emit(event)
        self.announcements = []

    def reported_metrics(self) -> list[str]:
        """Every metric the run reports (the problem's own once the first batch has told it)."""
        validated = self.val_batches is not None
        return reported_metrics(self.objective.problem, validated, self.objective.perplexity, self.metrics.names)

    def metric_modes(self) -> dict[str, str]:
        """Which way each reported metric improves: the metric's own word (higher_is_better), else its name."""
        return {name: self.modes.get(name) or default_mode(name) for name in self.reported_metrics()}

    def steps_per_epoch(self) -> int | None:
        """Optimizer steps per epoch (a last, shorter group of batches is a step too)."""
        batches = self.train_batches.steps()
        return None if batches is None else -(-batches // self.opt.accumulate_grad_batches)

    @property
    def tested(self) -> Tested | None:
        """The test split's result when the run ended (None: no test split, or not evaluated)."""
        return self.final_test.result if self.final_test is not None else None

    def _unless_empty(self, split: Batches | None, name: str) -> Batches | None:
        """``split``, or None with a warning when it is known to give no batch (never a perfect score of nothing)."""
        if split is not None and (why := split.empty()):
            without = "training without validation" if name == "validation" else "no test at the end"
            self.announcements.append(Message("warning", f"the {name} data is empty ({why}): {without}"))
            return None
        return split

    def _close_loaders(self) -> None:
        test = self.final_test.batches if self.final_test is not None else None
        for batches in (self.train_batches, self.val_batches, test):
            if batches is not None:
                batches.close()
