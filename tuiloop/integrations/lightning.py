"""Lightning's ``Trainer``, watched and steered by tuiloop: one callback.

::

    import lightning as L
    from tuiloop.integrations.lightning import TuiloopCallback

    trainer = L.Trainer(max_epochs=10, callbacks=[TuiloopCallback()])
    trainer.fit(model, train_loader, val_loader)   # tuiloop attach runs/<name>-... watches it; its keys steer it

The callback writes a full run directory (:class:`~tuiloop.runner.framework_run.FrameworkRun`):
run.json with the module's hyperparameters and the Trainer's settings, the loss of every
optimizer step (the ``loss`` that ``training_step`` returns, left on its device until the next
write) with its learning rate, as batched step events, each validation with the metrics of
``trainer.callback_metrics`` under the names the module logged them with, the
``ModelCheckpoint``'s saves, the epochs and planned steps, and the summary. Lightning's own
progress bar and loggers are left as they are: the monitor is another view.

The keys act at the end of an optimizer step (``on_train_batch_end``): ``p`` blocks there, ``s``
calls ``trainer.save_checkpoint`` on every rank, ``q`` sets ``trainer.should_stop``, ``e`` sets
it at the end of the epoch, ``-`` / ``+`` scale every optimizer's groups and every scheduler's
``base_lrs`` (a ``LambdaLR`` would undo a bare edit at its next step). Under the ``ddp`` strategy
(or torchrun) the callback runs in every process: only the main one writes the run directory and
listens on its socket, and the ranks agree on every command at the same step with one small
``all_reduce`` (a stop any rank asks for stops all of them, the reduction ``EarlyStopping`` makes).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from tuiloop.engine.device import device_name
from tuiloop.engine.distributed import Ranks
from tuiloop.engine.lr import Joined
from tuiloop.runner.framework_plan import Plan
from tuiloop.runner.framework_run import FrameworkRun
from tuiloop.runner.opening import PathLike
from tuiloop.runner.settings import config_data

# The Trainer's settings run.json keeps beside the module's hyperparameters.
TRAINER_SETTINGS = (
    "max_epochs",
    "max_steps",
    "accumulate_grad_batches",
    "precision",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "val_check_interval",
    "check_val_every_n_epoch",
    "log_every_n_steps",
    "world_size",
    "num_nodes",
    "default_root_dir",
)


class TuiloopCallback(Callback):
    """Watch and steer a ``lightning.Trainer`` with tuiloop.

    * ``run_dir``: the run directory; None (the default): a fresh
      ``./runs/<name>-<timestamp>-<hex>``, named for ``name`` or the script. A directory that
      holds an earlier run is continued only with ``resume=True``. Calling ``trainer.fit()``
      again goes on in the same directory.
    * ``handle_signals``: Ctrl+C stops the training at the next step and a second one forces
      the process to exit, as for ``tuiloop run``.
    * ``log_interval``: seconds between writes of the step losses.
    """

    def __init__(
        self,
        run_dir: PathLike | None = None,
        name: str | None = None,
        resume: bool = False,
        handle_signals: bool = True,
        log_interval: float = 0.25,
    ) -> None:
        self.run = FrameworkRun("lightning", "TuiloopCallback", run_dir, name, resume, handle_signals, log_interval)
        self._step = 0  # trainer.global_step at the last optimizer step
        self._loss: torch.Tensor | None = None  # the step's loss (its accumulated batches' summed)
        self._lr: float | None = None  # the step's learning rate, read before the scheduler steps
        self._save_on_stop = True  # a stop saves, unless a ModelCheckpoint saves as the run ends anyway
        # a save Lightning made whose path its ModelCheckpoint knows once the save returns:
        # (epoch, step, every ModelCheckpoint's last save before it)
        self._pending: tuple[int, int, dict[int, tuple[str, int]]] | None = None
        self._ours = False  # a save of the callback's own is in progress
        self._val_t0 = 0.0

    # ---- beginning and end ----------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run = self.run
        if run.run_dir is not None:  # an earlier fit() raised before its end: it failed
            run.abandon()
        self._step, self._loss, self._pending = trainer.global_step, None, None
        self._save_on_stop = not trainer.checkpoint_callbacks
        schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
        joined = Joined(list(trainer.optimizers), schedulers)
        run.begin(
            _plan(trainer, pl_module), _ranks(trainer), joined, joined, _config(trainer, pl_module), pl_module.device
        )
        # fit() again in this process goes on in this run directory
        run.run_dir_arg, run.resume = run.run_dir_arg or run.run_dir, True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._resolve_save(trainer)
        early = ""
        if trainer.should_stop and not self.run.ending:
            stoppers = [cb for cb in _early_stoppings(trainer) if cb.stopped_epoch]
            early = (
                f"EarlyStopping: {stoppers[0].monitor} did not improve"
                if stoppers
                else f"trainer.should_stop was set at step {trainer.global_step}"
            )
        self.run.end(trainer.global_step, trainer.current_epoch, early)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.run.fail(exception)

    # ---- steps and epochs -----------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._resolve_save(trainer)
        self.run.epoch_begins(trainer.current_epoch + 1)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._resolve_save(trainer)
        if trainer.optimizers:
            self._lr = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):  # Lightning divides it by accumulate_grad_batches: the sum is the mean
            self._loss = loss if self._loss is None or trainer.accumulate_grad_batches == 1 else self._loss + loss
        step = trainer.global_step
        if step == self._step:  # a batch accumulated: the optimizer did not step
            return
        run, steps, self._step = self.run, step - self._step, step
        if self._loss is not None:
            run.log(step, self._loss, self._lr, None, steps)
            self._loss = None
        save, stop = run.step_end(step, self._save_on_stop)
        if save:
            self._save(trainer)
        if stop:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._resolve_save(trainer)
        if self.run.epoch_end(trainer.current_epoch + 1):
            trainer.should_stop = True
            if self._save_on_stop:
                self._save(trainer)

    # ---- validations ----------------------------------------------------------------------------
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._resolve_save(trainer)
        self._val_t0 = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or self.run.run_dir is None:
            return
        duration = time.perf_counter() - self._val_t0
        self.run.evaluated(trainer.current_epoch + 1, trainer.global_step, metrics(trainer.callback_metrics), duration)

    # ---- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._ours or self.run.run_dir is None:
            return
        self._resolve_save(trainer)  # a save just before this one (a ModelCheckpoint's top-k, then its last)
        self._pending = (trainer.current_epoch + 1, trainer.global_step, _last_saves(trainer))

    def _resolve_save(self, trainer: pl.Trainer) -> None:
        """The save Lightning made last, now done: its ModelCheckpoint knows the path."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        epoch, step, before = pending
        for cb in _model_checkpoints(trainer):
            path, _ = now = _last_save(cb)
            if path and now != before.get(id(cb)):
                best = cb.monitor and path == cb.best_model_path
                self.run.saved(
                    path, epoch, step, "last" if path == cb.last_model_path else "best" if best else "periodic"
                )
                return

    def _save(self, trainer: pl.Trainer) -> None:
        """The save ``s`` (or a stop) asks for, on every rank: ``trainer.save_checkpoint`` into the
        ModelCheckpoint's folder, else ``<default_root_dir>/checkpoints``."""
        dirpath = next((cb.dirpath for cb in _model_checkpoints(trainer) if cb.dirpath), None)
        dirpath = dirpath or os.path.join(trainer.default_root_dir, "checkpoints")
        path = os.path.join(dirpath, f"tuiloop-epoch={trainer.current_epoch}-step={trainer.global_step}.ckpt")
        self._ours = True
        try:
            trainer.save_checkpoint(path)
        finally:
            self._ours = False
        self.run.saved(path, trainer.current_epoch + 1, trainer.global_step)


def metrics(callback_metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers among ``trainer.callback_metrics``, under the names they were logged with."""
    out = {}
    for key, value in callback_metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[key] = float(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def _model_checkpoints(trainer: pl.Trainer) -> list[ModelCheckpoint]:
    return [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]


def _early_stoppings(trainer: pl.Trainer) -> list[EarlyStopping]:
    return [cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping)]  # type: ignore[attr-defined]  # a list


def _last_save(cb: ModelCheckpoint) -> tuple[str, int]:
    """A ModelCheckpoint's last save: its path and its step (private in Lightning 2.x: read with care)."""
    return str(getattr(cb, "_last_checkpoint_saved", "") or ""), int(getattr(cb, "_last_global_step_saved", -1))


def _last_saves(trainer: pl.Trainer) -> dict[int, tuple[str, int]]:
    return {id(cb): _last_save(cb) for cb in _model_checkpoints(trainer)}


def _ranks(trainer: pl.Trainer) -> Ranks:
    """This process's place among the Trainer's processes (one: no collectives)."""
    if trainer.world_size < 2 or not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    return Ranks(trainer.global_rank, trainer.world_size, trainer.local_rank, str(dist.get_backend()))


def _monitor(trainer: pl.Trainer) -> tuple[str, str]:
    """The metric the Trainer's ModelCheckpoint (else its EarlyStopping) watches, and which way is better."""
    watchers: list[ModelCheckpoint | EarlyStopping] = [*_model_checkpoints(trainer)]
    watchers += _early_stoppings(trainer)
    for cb in watchers:
        if cb.monitor:
            return cb.monitor, cb.mode
    return "val_loss", "min"


def _plan(trainer: pl.Trainer, pl_module: pl.LightningModule) -> Plan:
    """What the Trainer knows of its run as it begins."""
    accumulate = trainer.accumulate_grad_batches
    batches = trainer.num_training_batches
    spe = math.ceil(batches / accumulate) if math.isfinite(batches) and batches > 0 else None
    estimated = trainer.estimated_stepping_batches
    max_steps = int(estimated) if math.isfinite(estimated) else 0
    epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 0
    if spe and max_steps:
        epochs = min(epochs, math.ceil(max_steps / spe)) if epochs else math.ceil(max_steps / spe)
    loader = trainer.train_dataloader
    batch_size = getattr(loader, "batch_size", None)
    dataset = getattr(loader, "dataset", None)
    monitor, mode = _monitor(trainer)
    start = trainer.global_step
    resumed_from = (str(trainer.ckpt_path) if trainer.ckpt_path else "a checkpoint") if start else None
    return Plan(
        name=None,
        epochs=epochs if spe else 0,
        steps_per_epoch=spe,
        max_steps=max_steps,
        device=str(pl_module.device),
        device_name=device_name(pl_module.device),
        num_params=sum(p.numel() for p in pl_module.parameters()),
        batch_size=batch_size,
        train_size=len(dataset) if dataset is not None and hasattr(dataset, "__len__") else None,
        samples_per_step=(batch_size or 0) * accumulate * max(trainer.world_size, 1),
        monitor=monitor,
        mode=mode,
        start_step=start,
        resumed_from=resumed_from,
        precision=str(trainer.precision),
        accumulate_grad_batches=accumulate,
    )


def _config(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """The module's hyperparameters (``save_hyperparameters``) and the Trainer's settings, for run.json."""
    settings = {key: getattr(trainer, key, None) for key in TRAINER_SETTINGS}
    settings["strategy"] = type(trainer.strategy).__name__
    settings["accelerator"] = type(trainer.accelerator).__name__
    return config_data({"hparams": dict(pl_module.hparams), "trainer": settings})
