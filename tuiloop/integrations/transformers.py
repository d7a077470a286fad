"""The Hugging Face ``Trainer``, watched and steered by tuiloop: one callback.

::

    from tuiloop.integrations.transformers import TuiloopCallback

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                      callbacks=[TuiloopCallback()])
    trainer.train()          # tuiloop attach runs/<name>-... watches it; its keys steer it

The callback writes a full run directory (:class:`~tuiloop.runner.framework_run.FrameworkRun`):
run.json with the ``TrainingArguments``, the losses, learning rate and grad norm the Trainer logs
(``on_log``) as batched step events, its evaluations (``eval_loss`` as ``val_loss``, ``eval_<m>``
as ``val_<m>``), its checkpoints, its epochs and planned steps, and the summary. The keys act
through ``TrainerControl`` at step boundaries: ``p`` blocks in ``on_step_end``, ``s`` sets
``should_save`` (the Trainer writes its own checkpoint), ``q`` sets ``should_training_stop``,
``e`` stops after this epoch, ``-`` / ``+`` scale the optimizer's groups and the scheduler's
``base_lrs`` (a ``LambdaLR`` would undo a bare edit at its next step).

Under ``torchrun`` / ``accelerate launch`` the callback runs in every process: only the main one
writes the run directory and listens on its socket, and every decision is agreed by all ranks
at the same step.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch.distributed as dist
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from tuiloop.engine.device import device_name
from tuiloop.engine.distributed import Ranks
from tuiloop.runner.framework_plan import Plan
from tuiloop.runner.framework_run import FrameworkRun
from tuiloop.runner.opening import PathLike
from tuiloop.runner.settings import config_data

# The Trainer's timings of an evaluation: not metrics of the model, so not shown as val_<m>.
EVAL_TIMINGS = ("runtime", "samples_per_second", "steps_per_second")


class TuiloopCallback(TrainerCallback):
    """Watch and steer a ``transformers.Trainer`` with tuiloop.

    * ``run_dir``: the run directory; None (the default): a fresh
      ``./runs/<name>-<timestamp>-<hex>``, named for ``TrainingArguments.run_name`` or the script.
      A directory that holds an earlier run is continued only with ``resume=True``. Calling
      ``trainer.train()`` again goes on in the same directory.
    * ``handle_signals``: Ctrl+C stops the training at the next step and a second one forces
      the process to exit, as for ``tuiloop run``.
    * ``log_interval``: seconds between writes of the logged losses.

    The Trainer logs every ``logging_steps`` (500 by default): the loss plot and the progress
    move at each log, so ``logging_steps=10`` gives a livelier view.
    """

    def __init__(
        self,
        run_dir: PathLike | None = None,
        name: str | None = None,
        resume: bool = False,
        handle_signals: bool = True,
        log_interval: float = 0.25,
    ) -> None:
        self.run = FrameworkRun("transformers", "TuiloopCallback", run_dir, name, resume, handle_signals, log_interval)
        self.epoch = 1  # the epoch in progress, from 1
        self._last_logged = 0  # the step of the Trainer's last loss
        # a stop saves; with save_strategy="epoch" the Trainer saves at the epoch's end anyway, even cut short
        self._save_on_stop = False

    # ---- beginning and end ----------------------------------------------------------------------
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        run = self.run
        if run.run_dir is not None:  # an earlier train() raised before its end: it failed
            run.abandon()
        model, optimizer, scheduler = kwargs.get("model"), kwargs.get("optimizer"), kwargs.get("lr_scheduler")
        loader = kwargs.get("train_dataloader")
        if not hasattr(scheduler, "base_lrs"):  # Accelerate's wrapper: the schedule lives in the one it wraps
            scheduler = getattr(scheduler, "scheduler", scheduler)
        self._last_logged = state.global_step
        self._save_on_stop = _strategy(args) == "steps"
        self.epoch = int(state.epoch or 0) + 1
        run.begin(_plan(args, state, model, loader), _ranks(args), optimizer, scheduler, _config(args), args.device)
        if run.run_dir is not None and args.logging_steps and args.logging_strategy == "steps":
            run.message(f"the Trainer logs its loss every {args.logging_steps} steps (logging_steps)")
        # train() again in this process goes on in this run directory
        run.run_dir_arg, run.resume = run.run_dir_arg or run.run_dir, True

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        early = ""
        if state.max_steps and state.global_step < state.max_steps:
            early = f"the Trainer stopped at step {state.global_step} of {state.max_steps} (a callback set should_training_stop)"
        self.run.end(state.global_step, int(state.epoch or 0), early)

    # ---- steps and epochs -----------------------------------------------------------------------
    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.epoch = int(state.epoch or 0) + 1
        self.run.epoch_begins(self.epoch)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        save, stop = self.run.step_end(state.global_step, self._save_on_stop)
        if save:
            control.should_save = True
        if stop:
            control.should_training_stop = True

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.run.epoch_end(self.epoch):
            control.should_training_stop = True
            control.should_save = control.should_save or self._save_on_stop

    # ---- what the Trainer reports ---------------------------------------------------------------
    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs or "loss" not in logs:  # evaluations come to on_evaluate; the final timings are not steps
            return
        steps = max(state.global_step - self._last_logged, 1)
        self._last_logged = state.global_step
        self.run.log(state.global_step, float(logs["loss"]), logs.get("learning_rate"), logs.get("grad_norm"), steps)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        metrics = metrics or {}
        duration = float(metrics.get("eval_runtime") or 0.0)
        self.run.evaluated(_epoch_of(state), state.global_step, val_metrics(metrics), duration)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        path = os.path.join(args.output_dir or "", f"checkpoint-{state.global_step}")
        best = state.best_model_checkpoint is not None and os.path.abspath(
            state.best_model_checkpoint
        ) == os.path.abspath(path)
        self.run.saved(path, _epoch_of(state), state.global_step, "best" if best else "periodic")


def val_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """An evaluation's metrics as tuiloop names them: ``eval_loss`` -> ``val_loss``, ``eval_<m>``
    -> ``val_<m>``; the Trainer's timings and its ``epoch`` are left out."""
    out = {}
    for key, value in metrics.items():
        if key == "epoch" or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if key.startswith("eval_"):
            key = key[len("eval_") :]
            if key in EVAL_TIMINGS:
                continue
            key = f"val_{key}"
        out[key] = float(value)
    return out


def _epoch_of(state: TrainerState) -> int:
    """The epoch the Trainer's state is in, from 1: the epoch just ended at its end, else the one in progress."""
    return max(math.ceil(state.epoch or 0), 1)


def _strategy(args: TrainingArguments) -> str:
    """When the Trainer saves: steps, epoch, best or no."""
    return str(getattr(args.save_strategy, "value", args.save_strategy))


def _ranks(args: TrainingArguments) -> Ranks:
    """This process's place among the Trainer's processes (one: no collectives)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return Ranks()
    return Ranks(dist.get_rank(), dist.get_world_size(), args.local_process_index, str(dist.get_backend()))


def _plan(args: TrainingArguments, state: TrainerState, model: Any, loader: Any) -> Plan:
    """What the Trainer knows of its run as it begins."""
    accumulate = args.gradient_accumulation_steps
    sized = loader is not None and hasattr(loader, "__len__")
    spe = -(-len(loader) // accumulate) if sized else None
    monitor, mode = "val_loss", "min"
    if args.metric_for_best_model:
        name = args.metric_for_best_model
        monitor = val_metrics({name if name.startswith("eval_") else f"eval_{name}": 0.0}).popitem()[0]
        mode = "max" if args.greater_is_better else "min"
    start = state.global_step
    checkpoint = os.path.join(args.output_dir or "", f"checkpoint-{start}")
    dataset = getattr(loader, "dataset", None)
    return Plan(
        name=args.run_name,
        epochs=state.num_train_epochs if sized else 0,
        steps_per_epoch=spe,
        max_steps=state.max_steps,
        device=str(args.device),
        device_name=device_name(args.device),
        num_params=sum(p.numel() for p in model.parameters()) if model is not None else 0,
        batch_size=args.per_device_train_batch_size,
        train_size=len(dataset) if dataset is not None and hasattr(dataset, "__len__") else None,
        samples_per_step=args.train_batch_size * accumulate * max(args.world_size, 1),
        monitor=monitor,
        mode=mode,
        start_step=start,
        resumed_from=(checkpoint if os.path.isdir(checkpoint) else "a checkpoint of the Trainer") if start else None,
        precision="bf16-mixed" if args.bf16 else "16-mixed" if args.fp16 else "32-true",
        accumulate_grad_batches=accumulate,
    )


def _config(args: TrainingArguments) -> dict[str, Any]:
    """The TrainingArguments for run.json (tokens are hidden by ``to_dict``)."""
    return config_data(args.to_dict())
