"""Resuming with edits: which spec keys may change when a run continues, and applying them.

A resumed run is built from the new spec, so most changes (epochs, log interval, early-stopping
patience, checkpoint options, workers) take effect by themselves. The checkpoint then restores
the optimizer's and the scheduler's state over what the spec built, so their changed settings
are applied again after it. Keys whose change would break the run (the model, the data and its
order, the loss, the kind of optimizer or scheduler, what is monitored) are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuiloop.engine.events import SettingChanged
from tuiloop.engine.lr import scale_lr
from tuiloop.engine.trainer import Trainer
from tuiloop.spec import SpecError
from tuiloop.spec.schema import KWARG_SECTIONS, SCHEMA

# (section, key) pairs that may change; None as the key: every keyword argument of the target.
MUTABLE: dict[str, set[str | None]] = {
    "run": {"name", "out_dir", "device", "epochs", "val_every", "log_interval", "tensorboard"},
    "data": {"val_batch_size", "num_workers", "pin_memory", "persistent_workers", "multiprocessing_context"},
    "optimizer": {None},
    "scheduler": {None},
    "early_stopping": {"patience", "min_delta"},
    "checkpoint": {"best", "last", "every_n_epochs"},
    "train": {"precision", "compile", "gradient_clip_val", "gradient_clip_algorithm", "log_grad_norm"},
}
# Optional sections that may appear or go on resume (their state starts fresh or is dropped).
OPTIONAL = {"early_stopping"}

WHY = {
    "model": "the checkpoint holds the weights of the model it describes",
    "data": "the run replays the data in the order these settings give",
    "loss": "the losses and best values so far were measured with it",
    "optimizer": "the checkpoint's optimizer state belongs to the optimizer it names",
    "scheduler": "the checkpoint's scheduler state belongs to the scheduler it names",
    "early_stopping": "the best value and counter so far track that metric",
    "checkpoint": "the best value so far tracks that metric",
    "run": "the data order and the random draws so far follow it",
    "train": "the checkpoint counts optimizer steps of that many batches",
}

Change = tuple[str, str, Any, Any]  # section, key, old, new
_ABSENT = object()


def effective(raw: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """Every key of a spec with its value, defaults filled in; optional sections only if present."""
    out: dict[tuple[str, str], Any] = {}
    for section, schema in SCHEMA.items():
        if section not in raw and section in ("scheduler", "early_stopping"):
            continue
        table = raw.get(section, {})
        for key, (_, default) in schema.items():
            out[(section, key)] = table.get(key, default)
        if section in KWARG_SECTIONS:
            out.update({(section, k): v for k, v in table.items() if k not in schema})
    return out


def changes(old_raw: dict[str, Any], new_raw: dict[str, Any], where: str) -> list[Change]:
    """What the new spec changes; raises :class:`SpecError` naming a key that may not change."""
    for section in ("scheduler", "early_stopping"):
        if (section in old_raw) != (section in new_raw) and section not in OPTIONAL:
            verb = "adds" if section in new_raw else "removes"
            raise SpecError(
                where,
                f"the spec {verb} [{section}], which cannot change on resume: {WHY[section]}",
                f"Keep [{section}] as the run started, or start a new run.",
            )
    old, new = effective(old_raw), effective(new_raw)
    out: list[Change] = []
    for section, key in sorted(old.keys() | new.keys()):
        before, after = old.get((section, key), _ABSENT), new.get((section, key), _ABSENT)
        if before == after:
            continue
        allowed = MUTABLE.get(section, set())
        schema_key = key in SCHEMA.get(section, {})
        if (
            key in allowed
            or (None in allowed and not schema_key)
            or (section in OPTIONAL and (before is _ABSENT or after is _ABSENT))
        ):
            out.append((section, key, None if before is _ABSENT else before, None if after is _ABSENT else after))
            continue
        was = "unset" if before in (_ABSENT, None) else repr(before)
        now = "unset" if after in (_ABSENT, None) else repr(after)
        keep = f"Keep [{section}] {key} = {before!r}" if before is not _ABSENT else f"Leave [{section}] {key} out"
        raise SpecError(
            f"{where}, [{section}] {key}",
            f"it changed from {was} to {now}, and it cannot change on resume: {WHY.get(section, 'the checkpoint depends on it')}",
            f"{keep}, or start a new run with it.",
        )
    return out


def apply(trainer: Trainer, edits: list[Change], source: str) -> None:
    """Apply changed optimizer and scheduler settings over the restored state; announce every change."""
    for section, key, old, new in edits:
        if section == "optimizer":
            old = _set_optimizer(trainer, key, old, new)
        elif section == "scheduler":
            _set_scheduler(trainer, key, new)
        trainer.announcements.append(SettingChanged(f"{section}.{key}", old, new, trainer.epoch, trainer.step, source))


def _set_optimizer(trainer: Trainer, key: str, old: Any, new: Any) -> Any:
    """Set ``key`` to ``new``; returns the value it replaced."""
    if key == "lr" and isinstance(old, (int, float)) and isinstance(new, (int, float)) and old:
        current = old * trainer.lr_scale  # the - and + keys moved it from the spec's value
        scale_lr(trainer.optimizer, trainer.scheduler, new / current)  # keeps the schedule's shape
        trainer.lr_scale = 1.0  # the spec saved with this resume says the new value
        return current
    for group in trainer.optimizer.param_groups:
        group[key] = new
    return old


def _set_scheduler(trainer: Trainer, key: str, new: Any) -> None:
    sched = trainer.scheduler
    name = {"min_lr": "min_lrs"}.get(key, key) if trainer.plateau else key
    if sched is None or not hasattr(sched, name):
        raise SpecError(
            f"[scheduler] {key}",
            f"{type(sched).__name__} keeps no setting {key!r} that tuiloop can change on resume",
            f"Keep [scheduler] {key} as the run started, or start a new run.",
        )
    if name == "min_lrs":
        new = [new] * len(trainer.optimizer.param_groups) if not isinstance(new, list) else new
    setattr(sched, name, new)


def check_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a resume continues from; raises :class:`SpecError` when there is none."""
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        raise SpecError(
            f"--resume {run_dir}",
            "there is no checkpoints/last.pt to resume from",
            "Resume needs a run that saved its last state ([checkpoint] last = true).",
        )
    return last
