"""The spec's sections and keys: each key declared once, as a field of its section's dataclass.

A new key is one :func:`~tuiloop.spec.keys.key` line here, the code that reads it, and its line
in the spec reference. :data:`SCHEMA` (what validation walks), the defaults, the checks, the
``Options`` a spec builds (:meth:`Spec.loop_options`) and what ``--resume`` may change
(``tuiloop.runner.resume.MUTABLE``) are read from these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tuiloop.spec.checks as checks
from tuiloop.spec.keys import REQUIRED, Key, at_least, key, keys_of, not_negative, positive

# What users write for a precision, and the name tuiloop (and Lightning) uses for it.
PRECISION_ALIASES = {
    "fp16": "16-mixed", "16": "16-mixed", "float16": "16-mixed", "half": "16-mixed", "16-true": "16-mixed",
    "amp": "16-mixed",
    "bf16": "bf16-mixed", "bfloat16": "bf16-mixed", "bf16-true": "bf16-mixed",
    "32": "32-true", "fp32": "32-true", "float32": "32-true", "full": "32-true",
}  # fmt: skip
MODES = ("min", "max")


@dataclass
class RunSpec:
    """[run]: the run directory, the seed, the device, and how long and how often."""

    name: str = key(
        None,
        option="run_name",
        resume=True,
        check=checks.run_name,
        help="the run directory is <out_dir>/<name>-<YYYYmmdd-HHMMSS>-<4 hex>; default: the spec file's stem",
    )
    out_dir: str = key("runs", resume=True, help="where run directories go, relative to the current directory")
    seed: int = key(0, help="seeds python, numpy, torch and the data order")
    device: str = key("auto", resume=True, help="auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps")
    epochs: int = key(option="epochs", resume=True, low=at_least(1, "Set epochs = 1 or more."), help="epochs to train")
    val_every: int = key(
        option="val_every",
        resume=True,
        low=at_least(1, "Set val_every = 1 or more."),
        help="validate every N epochs (early-stopping patience counts these checks)",
    )
    log_interval: float = key(
        option="log_interval",
        resume=True,
        low=positive("For example log_interval = 0.25.", unit="seconds"),
        help="seconds between batched step-loss events (one device sync each)",
    )
    stall_after: float | None = key(
        option="stall_after",
        resume=True,
        low=positive("For example stall_after = 600.", unit="seconds"),
        help="seconds without a step or a validation batch before the run counts as stalled; "
        "default: automatic (10x the longest wait seen, at least 300)",
    )
    nproc_per_node: int | str = key(
        1, check=checks.nproc, help='processes per machine (torchrun); "auto": one per visible GPU'
    )
    tensorboard: bool = key(
        False, resume=True, help="mirror the scalars live into RUN_DIR/tensorboard (pip install 'tuiloop[tensorboard]')"
    )


@dataclass
class TargetSpec:
    """A section that names something to build (``target``) and its keyword arguments."""

    section: str
    target: str = key(
        REQUIRED,
        help='what to build: a torch name (loss, optimizer, scheduler), "package.module:attr" or "file.py:attr"',
    )
    kwargs: dict[str, Any] = field(default_factory=dict)  # the section's other keys


@dataclass
class DataSpec(TargetSpec):
    """[data]: a target that returns (train, val), and how to batch them."""

    batch_size: int = key(32, low=at_least(1, "Set batch_size = 32, for example."), help="samples per training batch")
    val_batch_size: int | None = key(
        None, resume=True, low=at_least(1, "Set val_batch_size = 32, for example."), help="default: batch_size"
    )
    num_workers: int = key(
        0, resume=True, low=not_negative("Use 0 to load in the training process."), help="DataLoader worker processes"
    )
    shuffle: bool = key(True, help="shuffle the training split every epoch")
    drop_last: bool = key(False, help="drop the last, shorter training batch of an epoch")
    pin_memory: bool | str = key("auto", resume=True, help="auto = on for CUDA")
    persistent_workers: bool = key(
        False, resume=True, help="keep workers across epochs (faster; a resume is then not exact)"
    )
    multiprocessing_context: str | None = key(
        None, resume=True, choices=("fork", "spawn", "forkserver"), help="how workers start; default: the platform's"
    )


@dataclass
class SchedulerSpec(TargetSpec):
    """[scheduler]: a torch.optim.lr_scheduler (or your own), when it steps, and what a plateau watches."""

    interval: str = key(
        option="scheduler_interval", choices=("epoch", "step"), help="step the scheduler every epoch | step"
    )
    monitor: str | None = key(
        option="scheduler_monitor",
        help="the metric ReduceLROnPlateau watches; default: the checkpoint monitor",
    )


@dataclass
class TrainSpec:
    """[train]: precision, accumulation, clipping, compilation (names as Lightning users know them)."""

    precision: str = key(
        option="precision",
        resume=True,
        choices=("32-true", "bf16-mixed", "16-mixed"),
        aliases=PRECISION_ALIASES,
        help='"32-true" | "bf16-mixed" | "16-mixed" (float16 + GradScaler: GPUs)',
    )
    accumulate_grad_batches: int = key(
        option="accumulate_grad_batches",
        low=at_least(1, "Use 1 to step the optimizer after every batch."),
        help="an optimizer step every N batches",
    )
    gradient_clip_val: float = key(
        option="gradient_clip_val",
        resume=True,
        low=not_negative("Use 0 to turn clipping off, or a positive limit such as 1.0."),
        help="0 = off",
    )
    gradient_clip_algorithm: str = key(
        option="gradient_clip_algorithm", resume=True, choices=("norm", "value"), help='"norm" | "value"'
    )
    compile: bool | str = key(
        option="compile",
        resume=True,
        check=checks.compile_mode,
        help='false | true | "default" | "reduce-overhead" | "max-autotune"',
    )
    log_grad_norm: bool | None = key(
        option="log_grad_norm",
        resume=True,
        help="also measure the gradient norm without clipping (always measured when clipping, and at 16-mixed)",
    )


@dataclass
class EarlyStoppingSpec:
    """[early_stopping]: stop when the monitored metric stops improving."""

    monitor: str = key(
        "val_loss", help="any reported metric: " + ", ".join(checks.METRICS) + ", or val_<name> of [metrics]"
    )
    mode: str = key(
        None,
        choices=MODES,
        help="min | max (default: the metric's higher_is_better, else max for accuracy-like names, min otherwise)",
    )
    patience: int = key(
        5,
        resume=True,
        low=at_least(1, "Remove [early_stopping] to train for all epochs."),
        help="validation checks without improvement",
    )
    min_delta: float = key(
        0.0,
        resume=True,
        low=not_negative("It is the smallest improvement that counts, e.g. 0.001."),
        help="the smallest improvement that counts",
    )
    explicit_mode: bool = False  # the spec names it (else the metric's own direction, or its name's)


@dataclass
class CheckpointSpec:
    """[checkpoint]: which checkpoints are written, and what "best" means."""

    best: bool = key(option="save_best", resume=True, help="checkpoints/best.pt by the monitored metric")
    last: bool = key(option="save_last", resume=True, help="checkpoints/last.pt every epoch, on stop, and on failure")
    every_n_epochs: int = key(
        option="every_n_epochs",
        resume=True,
        low=not_negative("Use 0 to turn periodic checkpoints off."),
        help="also checkpoints/epoch-NNNN.pt",
    )
    monitor: str = key(
        None,
        help="default: the early-stopping monitor, else val_loss (train_loss without a validation split)",
    )
    mode: str = key(None, choices=MODES, help="min | max (default: as for early stopping)")
    explicit_monitor: bool = False  # the spec names it (else it follows early stopping, or val_loss)
    explicit_mode: bool = False  # the spec names it (else early stopping's, the metric's own direction, or its name's)


@dataclass
class MetricsSpec:
    """[metrics]: name = "module:attr" or { target = "module:attr", keyword = value, ... }; each is
    reported as val_<name>. Its keys are the names you choose, so it declares none."""


@dataclass
class MetricSpec:
    """One entry of [metrics]: a metric reported as ``val_<name>`` (and ``test_<name>``)."""

    name: str
    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class FactsSpec:
    """[facts]: what the data function told the model (``vocab_size = 10000``), written by tuiloop into
    the saved spec.toml: the [model] arguments the spec left out and the data's facts filled. A resume
    or an eval checks that the data tells the same. Its keys are the facts' names, so it declares none."""


@dataclass
class NotifySpec:
    """[notify]: being told when something happens, by a command of yours or any service Apprise knows.

    A user-level default in ``~/.config/tuiloop/config.toml`` (:mod:`tuiloop.spec.userconfig`) applies
    to every run; the spec's keys override its keys. Every key may change on resume (a notice changes
    nothing of the training), but not live."""

    on: list[str] = key(
        list(checks.NOTIFY_DEFAULT),
        resume=True,
        check=checks.notify_events,
        help="the events told: " + ", ".join(checks.NOTIFY_EVENTS),
    )
    command: str | None = key(
        None,
        resume=True,
        check=checks.notify_command,
        help="a shell command run on each event: the event as JSON on stdin, TUILOOP_* in its environment",
    )
    urls: list[str] = key(
        [],
        resume=True,
        check=checks.notify_urls,
        help="Apprise URLs (ntfy://topic, slack://..., mailto://...); needs pip install 'tuiloop[notify]'",
    )
    timeout: float = key(
        10.0,
        resume=True,
        low=positive("For example timeout = 10.", unit="seconds"),
        help="seconds a notice may take (the command is ended then); the run never waits on one but at its end",
    )


@dataclass(frozen=True)
class Section:
    """A section of the spec: the dataclass that declares its keys, and how it behaves as a whole."""

    keys: type
    why: str  # why a resume may not change its other keys: the end of that error message
    presence: str = "default"  # "required": the spec must have it; "optional": None when absent; "default": defaults
    named: bool = False  # its keys are names the user chooses ([metrics]), each a target of its own
    kwargs_resume: bool = False  # every keyword argument of its target may change on resume
    comes_and_goes: bool = False  # an optional section that a resume may add or remove
    finite_kwargs: bool = False  # its target's numbers (torch's hyperparameters: lr, betas, ...) must be finite


# In the order the spec reference and the error messages list them.
SECTIONS: dict[str, Section] = {
    "run": Section(RunSpec, "the data order and the random draws so far follow it"),
    "model": Section(TargetSpec, "the checkpoint holds the weights of the model it describes", "required"),
    "data": Section(DataSpec, "the run replays the data in the order these settings give", "required"),
    "loss": Section(
        TargetSpec, "the losses and best values so far were measured with it", "required", finite_kwargs=True
    ),
    "optimizer": Section(
        TargetSpec,
        "the checkpoint's optimizer state belongs to the optimizer it names",
        "required",
        kwargs_resume=True,
        finite_kwargs=True,
    ),
    "scheduler": Section(
        SchedulerSpec,
        "the checkpoint's scheduler state belongs to the scheduler it names",
        "optional",
        kwargs_resume=True,
        finite_kwargs=True,
    ),
    "train": Section(TrainSpec, "the checkpoint counts optimizer steps of that many batches"),
    "early_stopping": Section(
        EarlyStoppingSpec, "the best value and counter so far track that metric", "optional", comes_and_goes=True
    ),
    "checkpoint": Section(CheckpointSpec, "the best value so far tracks that metric"),
    "metrics": Section(
        MetricsSpec, "metrics are measured afresh at every check", "optional", comes_and_goes=True, named=True
    ),
    "notify": Section(NotifySpec, "notices change nothing of the training", "optional", comes_and_goes=True),
    "facts": Section(
        FactsSpec,
        "the checkpoint holds the weights of the model they built",
        "optional",
        comes_and_goes=True,
        named=True,
    ),
}

# Derived from the declarations above.
SCHEMA: dict[str, dict[str, Key]] = {name: keys_of(name, s.keys) for name, s in SECTIONS.items()}
KWARG_SECTIONS = {name for name, s in SECTIONS.items() if issubclass(s.keys, TargetSpec)}
REQUIRED_SECTIONS = tuple(name for name, s in SECTIONS.items() if s.presence == "required")
OPTIONAL_SECTIONS = tuple(name for name, s in SECTIONS.items() if s.presence == "optional")
NAMED_SECTIONS = tuple(name for name, s in SECTIONS.items() if s.named)
# What may change on resume (tuiloop/runner/resume.py) and so live (tuiloop ctl RUN set): the keys
# declared with ``resume``; None as the key: every keyword argument of the target (``kwargs_resume``).
MUTABLE: dict[str, set[str | None]] = {
    name: {k for k, declared in SCHEMA[name].items() if declared.resume} | ({None} if s.kwargs_resume else set())
    for name, s in SECTIONS.items()
}
# Optional sections that may appear or go on resume (their state starts fresh or is dropped).
OPTIONAL = {name for name, s in SECTIONS.items() if s.comes_and_goes}
# Why the other keys of a section may not change.
WHY = {name: s.why for name, s in SECTIONS.items()}


def may_change(section: str, key: str) -> bool:
    """True if ``[section] key`` may change on resume (the resume rule)."""
    allowed = MUTABLE.get(section, set())
    return key in allowed or (None in allowed and key not in SCHEMA.get(section, {}))


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
    train: TrainSpec
    metrics: dict[str, MetricSpec] = field(default_factory=dict)  # [metrics], in the spec's order
    notify: NotifySpec | None = None  # [notify] as the spec writes it (the user's config.toml joins it at the run)
    facts: dict[str, Any] = field(default_factory=dict)  # [facts]: the data's facts the model was built with

    @property
    def monitor(self) -> str:
        return self.checkpoint.monitor

    @property
    def where(self) -> str:
        return str(self.path) if self.path else "spec"

    def loop_options(self) -> dict[str, Any]:
        """The engine ``Options`` fields this spec's keys set (each key's ``option``); absent sections set none."""
        out: dict[str, Any] = {}
        for name, keys in SCHEMA.items():
            values = getattr(self, name)
            if values is not None and name not in NAMED_SECTIONS:
                out.update({k.option: getattr(values, k.name) for k in keys.values() if k.option})
        return out
