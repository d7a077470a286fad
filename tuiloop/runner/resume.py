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

from tuiloop.engine import checkpoint as ckpt
from tuiloop.engine.events import Message, SettingChanged
from tuiloop.engine.exceptions import ResumeError
from tuiloop.engine.lr import scale_lr
from tuiloop.engine.trainer import Trainer
from tuiloop.rundir.checkpoints import Checked, CheckpointRefused, read_checked, recorded_saves
from tuiloop.rundir.handle import RunDir
from tuiloop.rundir.layout import CHECKPOINTS
from tuiloop.spec import SpecError
from tuiloop.spec.schema import KWARG_SECTIONS, MUTABLE, OPTIONAL, OPTIONAL_SECTIONS, SCHEMA, WHY

Change = tuple[str, str, Any, Any]  # section, key, old, new
_ABSENT = object()


def effective(raw: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """Every key of a spec with its value, defaults filled in; optional sections only if present; the
    model's arguments as it was built ([model] and the data's [facts])."""
    out: dict[tuple[str, str], Any] = {}
    for section, keys in SCHEMA.items():
        if section not in raw and section in OPTIONAL_SECTIONS:
            continue
        table = raw.get(section, {})
        for key, declared in keys.items():
            out[(section, key)] = table.get(key, declared.default)
        if section in KWARG_SECTIONS:
            out.update({(section, k): v for k, v in table.items() if k not in keys})
    facts = raw.get("facts")  # the data's facts filled the model's arguments the spec left out
    for k, v in facts.items() if isinstance(facts, dict) else ():
        out.setdefault(("model", k), v)
    return out


def changes(old_raw: dict[str, Any], new_raw: dict[str, Any], where: str) -> list[Change]:
    """What the new spec changes; raises :class:`SpecError` naming a key that may not change."""
    for section in OPTIONAL_SECTIONS:
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
        if (
            f"{section}.{key}" in trainer.live.kept
        ):  # set live (ctl set) and kept by the checkpoint: the resume's value wins
            old = trainer.live.kept[f"{section}.{key}"]
            trainer.live.restore({f"{section}.{key}": new})
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


def checked_checkpoint(home: RunDir, run_dir: Path) -> Checked:
    """last.pt, read once and checked against the log's records; refused as one paragraph (exit 2)."""
    try:
        return read_checked(home)
    except CheckpointRefused as e:
        raise SpecError(f"--resume {run_dir}", e.problem, f"{e.fix}.") from None


def recall_saves(trainer: Any, home: RunDir) -> None:
    """The last recorded save of each checkpoint the run's folder still holds (best.pt's SHA-256
    checks the file before the test split is evaluated on it)."""
    with home.subdir(CHECKPOINTS) as folder:
        there = set(folder.names())
    for ev in recorded_saves(home):
        name = ev.path.removeprefix(f"{CHECKPOINTS}/")
        if name in there:
            trainer.checkpoints.saves[name] = ev


def load_checkpoint(trainer: Any, run_dir: Path, last: Checked) -> None:
    """Restore ``trainer`` from the checked bytes of last.pt, its problems told as one paragraph
    (exit status 2). Bytes the log has no record of are loaded only if they are a newer save than
    the last one recorded (a process killed between writing last.pt and logging it); else refused."""
    where = f"--resume {run_dir}"
    try:
        state = ckpt.load(last.data)
    except ResumeError as e:
        problem = f"{last.mismatch()}; and {e}" if last.unrecorded else f"{last.name} cannot be resumed from: {e}"
        raise SpecError(where, problem, f"{last.fix()}.") from None
    if last.unrecorded:
        assert last.latest is not None
        if not state["step"] > last.latest.step:
            why = last.mismatch()
            try:  # a checkpoint of another run (copied in by mistake) says so too
                trainer.load_state_dict(state)
            except ResumeError as e:
                why = f"{why}; and {str(e).rstrip('.')}"
            except Exception:
                pass
            raise SpecError(where, why, f"{last.fix()}.")
        trainer.announcements.append(
            Message(
                "warning",
                f"{last.name} is newer (step {state['step']}) than the last save the log records of it (step {last.latest.step}): the run was killed while it logged that save, so the file could not be checked against its SHA-256",
            )
        )
    try:
        trainer.load_state_dict(state)
    except ResumeError as e:
        raise SpecError(where, str(e)) from None
    except Exception as e:  # a checkpoint of the right shape whose contents do not fit (a damaged value)
        raise SpecError(
            where, f"{last.name} cannot be resumed from ({type(e).__name__}: {e})", f"{last.fix()}."
        ) from None
    trainer.resumed_from = str(run_dir / last.name)
