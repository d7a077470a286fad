"""What a run announces when it starts: the :class:`~tuiloop.engine.events.RunStarted` event of a Trainer."""

from __future__ import annotations

import os
from typing import Any

from tuiloop.engine.device import device_name
from tuiloop.engine.events import RunStarted


def run_started(trainer: Any) -> RunStarted:
    """The run of ``trainer`` (a :class:`~tuiloop.engine.trainer.Trainer`, not imported: no cycle)
    as it is about to train (again, on a resume): sizes, device, metrics, monitors."""
    es = trainer.ends.es
    return RunStarted(
        run_name=trainer.opt.run_name,
        run_dir=str(trainer.run_dir or ""),
        device=str(trainer.device),
        device_name=device_name(trainer.device),
        epochs=trainer.opt.epochs,
        steps_per_epoch=trainer.steps_per_epoch(),
        batch_size=trainer.train_batches.batch_size,
        train_size=trainer.train_batches.num_samples,
        val_size=trainer.val_batches.num_samples if trainer.val_batches is not None else None,
        problem=trainer.objective.problem or "unknown",
        metrics=trainer.reported_metrics(),
        modes=trainer.metric_modes(),
        monitor=trainer.opt.monitor,
        mode=trainer.best.mode,
        patience=es.patience if es else None,
        num_params=sum(p.numel() for p in trainer.model.parameters()),
        start_epoch=trainer.progress.epoch,
        start_step=trainer.progress.step,
        resumed_from=trainer.resumed_from,
        pid=os.getpid(),
        session=trainer.session,
        precision=trainer.opt.precision,
        accumulate_grad_batches=trainer.opt.accumulate_grad_batches,
        world_size=trainer.ranks.world_size,
        backend=trainer.ranks.backend,
        nodes=list(trainer.ranks.nodes),
    )
