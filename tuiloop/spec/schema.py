"""The spec's sections and keys: names, types, defaults, and the validated dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# (type(s) accepted, default). REQUIRED marks keys without a default.
REQUIRED = object()
NUMBER = (int, float)

# Sections whose other keys are keyword arguments of their target.
KWARG_SECTIONS = {"model", "data", "loss", "optimizer", "scheduler"}

SCHEMA: dict[str, dict[str, tuple[Any, Any]]] = {
    "run": {
        "name": (str, None),  # default: the spec file's stem
        "out_dir": (str, "runs"),
        "seed": (int, 0),
        "device": (str, "auto"),
        "epochs": (int, 10),
        "val_every": (int, 1),
        "log_interval": (NUMBER, 0.25),
        "nproc_per_node": ((int, str), 1),  # processes per machine (torchrun); "auto": every visible GPU
        "tensorboard": (bool, False),  # mirror the run's scalars live into RUN_DIR/tensorboard (needs tensorboardX)
    },
    "model": {"target": (str, REQUIRED)},
    "data": {
        "target": (str, REQUIRED),
        "batch_size": (int, 32),
        "val_batch_size": (int, None),
        "num_workers": (int, 0),
        "shuffle": (bool, True),
        "drop_last": (bool, False),
        "pin_memory": ((bool, str), "auto"),
        "persistent_workers": (bool, False),
        "multiprocessing_context": (str, None),
    },
    "loss": {"target": (str, REQUIRED)},
    "optimizer": {"target": (str, REQUIRED)},
    "scheduler": {
        "target": (str, REQUIRED),
        "interval": (str, "epoch"),
        "monitor": (str, None),
    },
    "train": {
        "precision": (str, "32-true"),
        "accumulate_grad_batches": (int, 1),
        "gradient_clip_val": (NUMBER, 0.0),
        "gradient_clip_algorithm": (str, "norm"),
        "compile": ((bool, str), False),
        "log_grad_norm": (bool, None),  # also without clipping (always measured when clipping, and at 16-mixed)
    },
    "early_stopping": {
        "monitor": (str, "val_loss"),
        "mode": (str, None),
        "patience": (int, 5),
        "min_delta": (NUMBER, 0.0),
    },
    "checkpoint": {
        "best": (bool, True),
        "last": (bool, True),
        "every_n_epochs": (int, 0),
        "monitor": (str, None),
        "mode": (str, None),
    },
}

REQUIRED_SECTIONS = ("model", "data", "loss", "optimizer")

# Every metric the engine can report (tuiloop.engine.problem.metric_names); monitors must name one.
METRICS = ("train_loss", "val_loss", "val_acc", "val_mae")

CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("train", "precision"): ("32-true", "bf16-mixed", "16-mixed"),
    ("train", "gradient_clip_algorithm"): ("norm", "value"),
    ("scheduler", "interval"): ("epoch", "step"),
    ("data", "multiprocessing_context"): ("fork", "spawn", "forkserver"),
    ("early_stopping", "mode"): ("min", "max"),
    ("checkpoint", "mode"): ("min", "max"),
}


# What users write for a precision, and the name tuiloop (and Lightning) uses for it.
PRECISION_ALIASES = {
    "fp16": "16-mixed", "16": "16-mixed", "float16": "16-mixed", "half": "16-mixed", "16-true": "16-mixed", "amp": "16-mixed",
    "bf16": "bf16-mixed", "bfloat16": "bf16-mixed", "bf16-true": "bf16-mixed",
    "32": "32-true", "fp32": "32-true", "float32": "32-true", "full": "32-true",
}  # fmt: skip
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


@dataclass
class TargetSpec:
    """A section that names something to build (``target``) and its keyword arguments."""

    section: str
    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunSpec:
    name: str
    out_dir: str
    seed: int
    device: str
    epochs: int
    val_every: int
    log_interval: float
    nproc_per_node: int | str = 1
    tensorboard: bool = False


@dataclass
class DataSpec(TargetSpec):
    batch_size: int = 32
    val_batch_size: int | None = None
    num_workers: int = 0
    shuffle: bool = True
    drop_last: bool = False
    pin_memory: bool | str = "auto"
    persistent_workers: bool = False
    multiprocessing_context: str | None = None


@dataclass
class SchedulerSpec(TargetSpec):
    interval: str = "epoch"
    monitor: str | None = None


@dataclass
class TrainSpec:
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float = 0.0
    gradient_clip_algorithm: str = "norm"
    compile: bool | str = False
    log_grad_norm: bool | None = None


@dataclass
class EarlyStoppingSpec:
    monitor: str
    mode: str
    patience: int
    min_delta: float


@dataclass
class CheckpointSpec:
    best: bool
    last: bool
    every_n_epochs: int
    monitor: str
    mode: str
    explicit_monitor: bool = False  # the spec names it (else it follows early stopping, or val_loss)


@dataclass
class Spec:
    """A validated spec. ``raw`` is the TOML data after overrides; ``base_dir`` resolves files."""

    path: Path | None
    base_dir: Path
    raw: dict[str, Any]
    run: RunSpec
    model: TargetSpec
    data: DataSpec
    loss: TargetSpec
    optimizer: TargetSpec
    scheduler: SchedulerSpec | None
    early_stopping: EarlyStoppingSpec | None
    checkpoint: CheckpointSpec
    train: TrainSpec = field(default_factory=TrainSpec)

    @property
    def monitor(self) -> str:
        return self.checkpoint.monitor

    @property
    def where(self) -> str:
        return str(self.path) if self.path else "spec"
