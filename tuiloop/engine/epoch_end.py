"""What happens after each epoch: the check (validation, or the train loss alone), the best value,
early stopping, the epoch's scheduler step, and which checkpoints the epoch writes.

:class:`EpochEnd` is the Trainer's part that decides it. Validation runs every ``val_every``
epochs, and before a stop the ``e`` key asked for after this epoch; between checks an epoch
scheduler still steps (``ReduceLROnPlateau`` waits for the next check's value).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from tuiloop.engine.batches import Batches
from tuiloop.engine.best import MetricMonitor
from tuiloop.engine.distributed import Ranks
from tuiloop.engine.events import EarlyStopUpdate, Event, LRChanged, Message, Validated
from tuiloop.engine.metrics import MetricSet
from tuiloop.engine.objective import LossFunction, ModelLoss
from tuiloop.engine.options import Options
from tuiloop.engine.precision import Precision
from tuiloop.engine.problem import MetricTotals
from tuiloop.engine.progress import Progress


class EpochEnd:
    """The end-of-epoch policy; :attr:`best`, :attr:`es` and :attr:`last_metrics` go into checkpoints."""

    def __init__(
        self,
        opt: Options,
        progress: Progress,
        objective: LossFunction | ModelLoss,
        model: torch.nn.Module,
        val: Batches | None,
        precision: Precision,
        ranks: Ranks,
        device: torch.device,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        emit: Callable[[Event], None],
        metrics: MetricSet | None = None,
    ) -> None:
        self.opt = opt
        self.metrics = metrics  # the user's [metrics]
        self.progress = progress
        self.objective = objective
        self.model = model  # the module validation runs on
        self.val_batches = val
        self.precision = precision
        self.ranks = ranks
        self.device = device
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.emit = emit
        self.best = MetricMonitor(opt.monitor, opt.mode)  # type: ignore[arg-type]  # the Trainer filled both in
        self.es = opt.early_stopping
        self.plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)  # subclasses too
        self.last_metrics: dict[str, float] = {}  # of the last check
        self.majority: float | None = None  # the share of the most common class in the last evaluated split
        self._warned_majority = False
        self._pending_best = False  # the last check was a new best: best.pt is due

    def end(self, stop_after: bool) -> None:
        """The epoch ``progress.epoch + 1`` is trained: check it when due (``stop_after``: the run
        stops after it, if epochs are left), else step an epoch scheduler."""
        epoch = self.progress.epoch + 1
        if epoch % self.opt.val_every == 0 or (stop_after and epoch < self.opt.epochs):
            self.check()
        else:
            self._step_scheduler(None)

    def check(self) -> None:
        """The end-of-epoch check: validation (or the train loss alone), best, early stopping, scheduler."""
        started = time.perf_counter()
        progress = self.progress
        epoch = progress.epoch + 1
        metrics = {"train_loss": progress.epoch_loss()}
        if self.val_batches is not None:
            metrics.update(self.evaluate(self.val_batches, "val_"))
        self.last_metrics = metrics
        is_best = self.best.update(metrics[self.best.monitor], epoch)
        self.emit(Validated(epoch, progress.step, metrics, is_best, time.perf_counter() - started))
        self._one_class_warning(metrics)
        es = self.es
        if es is not None:
            value = metrics[es.monitor]
            es.update(value, epoch)
            self.emit(EarlyStopUpdate(epoch, es.monitor, value, es.best, es.counter, es.patience or 0, es.triggered))
        self._step_scheduler(metrics)
        self._pending_best = is_best

    def _one_class_warning(self, metrics: dict[str, float]) -> None:
        """Once a run: a classifier whose val_acc is the most common class's share predicts that class
        for every sample, and accuracy hides it (rare positives: 0.95 for a model that finds none)."""
        acc, share = metrics.get("val_acc"), self.majority
        if self._warned_majority or acc is None or share is None or share >= 1.0 or abs(acc - share) > 1e-9:
            return
        self._warned_majority = True
        have = [n for n in metrics if n.removeprefix("val_") in ("f1", "auroc")]
        advice = (
            f"watch {' and '.join(have)}"
            if have
            else 'add F1 or AUROC under [metrics] (f1 = "torchmetrics.classification:BinaryF1Score", '
            'auroc = "torchmetrics.classification:BinaryAUROC"; their Multiclass* kinds take num_classes) '
            "and monitor val_f1"
        )
        self.emit(
            Message(
                "warning",
                f"val_acc {acc:.4f} is exactly the share of the most common class in the validation data: "
                f"the model predicts that one class for every sample, and accuracy cannot tell. {advice[0].upper()}{advice[1:]}.",
            )
        )

    def checkpoint_tags(self) -> list[str]:
        """The checkpoints the epoch just counted writes: best (after a new best), periodic, last."""
        tags = []
        if self.opt.save_best and self._pending_best:
            tags.append("best")
        self._pending_best = False
        if self.opt.every_n_epochs and self.progress.epoch % self.opt.every_n_epochs == 0:
            tags.append("periodic")
        if self.opt.save_last:
            tags.append("last")
        return tags

    @property
    def early_stopped(self) -> str:
        """Why early stopping ends the run ('' while it does not)."""
        es = self.es
        if es is None or not es.triggered:
            return ""
        return f"{es.monitor} did not improve for {es.patience} checks"

    def evaluate(self, batches: Batches, prefix: str) -> dict[str, float]:
        """The loss and every metric over one split (each sample once, on every rank's shard),
        named ``<prefix>loss``, ``<prefix>acc``, ...; the user's metrics update on the device."""
        model, objective, user = self.model, self.objective, self.metrics
        model.eval()
        totals = MetricTotals(
            objective.problem or "other", objective.loss_fn, self.device, objective.perplexity, prefix
        )
        if user:
            user.start()
        with torch.inference_mode(), self.precision.autocast():
            for batch in batches.epoch(0):
                args, kwargs, target = objective.split(batch)
                output = model(*args, **kwargs)
                n = objective.count(batch, target)
                totals.add(objective.loss(output, target), output, target, n)
                if user:
                    user.update(*objective.metric_inputs(args, kwargs, output, target), n)
        model.train()
        out = totals.result(self.ranks)
        self.majority = totals.majority
        if user:
            out.update(user.result(prefix))
        return out

    def _step_scheduler(self, metrics: dict[str, float] | None) -> None:
        """An epoch scheduler's step (a plateau scheduler's only with a check's metrics)."""
        if self.scheduler is None or self.opt.scheduler_interval != "epoch":
            return
        before = self.optimizer.param_groups[0]["lr"]
        if self.plateau:
            if metrics is None:
                return
            self.scheduler.step(metrics[self.opt.scheduler_monitor or self.best.monitor])
        else:
            self.scheduler.step()
        after = self.optimizer.param_groups[0]["lr"]
        if after != before:
            self.emit(LRChanged(self.progress.epoch + 1, self.progress.step, after, before))

    # ---- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The last check's metrics and the monitors, under their checkpoint keys."""
        metrics = self.last_metrics
        return {
            "loss": metrics.get("val_loss", metrics.get("train_loss")),
            "metrics": dict(metrics),
            "best": self.best.state_dict(),
            "early_stopping": self.es.state_dict() if self.es else None,
        }

    def check_compatible(self, state: dict[str, Any]) -> None:
        """Raise :class:`~tuiloop.engine.exceptions.ResumeError` if the checkpoint's monitors track other metrics."""
        self.best.check_compatible(state["best"], "[checkpoint]")
        if self.es and state.get("early_stopping"):
            self.es.check_compatible(state["early_stopping"], "[early_stopping]")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.last_metrics = dict(state.get("metrics") or {})
        self.best.load_state_dict(state["best"])
        if self.es and state.get("early_stopping"):
            self.es.load_state_dict(state["early_stopping"])
