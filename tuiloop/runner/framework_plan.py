"""What a training framework knows of its run as the training begins, and the announcement it makes of it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tuiloop.engine.commands import Loop, obeyed_by
from tuiloop.engine.distributed import Ranks
from tuiloop.engine.events import RunStarted


@dataclass
class Plan:
    """What the framework knows of the run when its training begins."""

    name: str | None  # the run's name as the framework has it (None: the directory's, or the script's)
    epochs: int
    steps_per_epoch: int | None
    max_steps: int
    device: str
    device_name: str
    num_params: int = 0
    batch_size: int | None = None  # per process
    train_size: int | None = None
    samples_per_step: int = 0  # all processes together, accumulation included (for samples/s)
    monitor: str = "val_loss"
    mode: str = "min"
    start_step: int = 0  # the framework resumed from a checkpoint of its own at this step
    resumed_from: str | None = None
    precision: str = "32-true"
    accumulate_grad_batches: int = 1

    def started(self, name: str, run_dir: Path, session: str, ranks: Ranks, loop: Loop) -> RunStarted:
        """The run's RunStarted event: its plan, where it runs, the commands the loop obeys."""
        spe = self.steps_per_epoch
        return RunStarted(
            run_name=name,
            run_dir=str(run_dir),
            device=self.device,
            device_name=self.device_name,
            epochs=self.epochs,
            steps_per_epoch=spe,
            batch_size=self.batch_size,
            train_size=self.train_size,
            val_size=None,
            problem="other",
            metrics=list(dict.fromkeys(["train_loss", self.monitor])),
            monitor=self.monitor,
            mode=self.mode,
            patience=None,
            num_params=self.num_params,
            start_epoch=self.start_step // spe if spe else 0,
            start_step=self.start_step,
            resumed_from=self.resumed_from,
            pid=os.getpid(),
            precision=self.precision,
            accumulate_grad_batches=self.accumulate_grad_batches,
            session=session,
            world_size=ranks.world_size,
            backend=ranks.backend,
            nodes=list(ranks.nodes),
            commands=list(obeyed_by(loop)),
            loop=loop,
            max_steps=self.max_steps,
        )
