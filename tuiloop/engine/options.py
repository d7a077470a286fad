"""The loop's settings that are not objects: the spec's [run], [scheduler], [early_stopping], [checkpoint], [train].

The defaults here are the spec's too: a spec key names the field it feeds (``key(option=...)`` in
tuiloop/spec/schema.py) and takes its default from it. The engine does not know the spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuiloop.engine.best import MetricMonitor


@dataclass
class Options:
    """Loop settings that are not objects; the Python API's defaults and the spec's."""

    epochs: int = 10
    val_every: int = 1
    log_interval: float = 0.25
    stall_after: float | None = None  # seconds without a step or a validation batch; None: automatic
    run_name: str = "run"
    scheduler_interval: str = "epoch"
    scheduler_monitor: str | None = None
    monitor: str | None = None  # default: val_loss, or train_loss without a validation split
    mode: str | None = None  # default: max for accuracy-like metrics, min otherwise
    early_stopping: MetricMonitor | None = None
    save_best: bool = True
    save_last: bool = True
    every_n_epochs: int = 0
    # the spec's [train]
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float = 0.0
    gradient_clip_algorithm: str = "norm"
    compile: bool | str = False
    log_grad_norm: bool | None = None  # also without clipping (always measured when clipping, and at 16-mixed)


# 16-mixed: this many steps in a row skipped by the grad scaler means the loss is not finite for
# another reason than float16 overflow (the scale has been halved that many times).
MAX_SKIPPED_IN_A_ROW = 25
