"""Settings changed while a run trains (``tuiloop ctl RUN set KEY=VALUE``): which ones, and how.

What may change live is what may change on resume (the spec's ``key(..., resume=True)``) and
takes effect from the next step: every keyword argument of the optimizer and of the scheduler,
and the keys of :data:`LIVE_OPTIONS` and :data:`LIVE_EARLY_STOPPING`. The other resume keys (the
device, the data loader's workers, the precision, ...) are read only when a run starts.

:class:`Live` applies a change to the parts of the loop that read it, and tells each one as a
:class:`~tuiloop.engine.events.SettingChanged` event. The optimizer's and the scheduler's
settings are kept in their own state in checkpoints; the others in the checkpoint's ``settings``
(:attr:`Live.kept`), which a resumed run applies again (:meth:`Live.restore`). The names are
the spec's; this module reads no spec and, but for :class:`Live`, imports no torch.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, Callable

from tuiloop.engine.events import Event, Message, SettingChanged

if TYPE_CHECKING:
    from tuiloop.engine.epoch_end import EpochEnd
    from tuiloop.engine.options import Options
    from tuiloop.engine.progress import Progress
    from tuiloop.engine.step import Stepper
    from tuiloop.engine.telemetry import StepTelemetry

# spec key -> the Options field the loop reads it from
LIVE_OPTIONS = {
    "run.epochs": "epochs",
    "run.val_every": "val_every",
    "run.log_interval": "log_interval",
    "train.gradient_clip_val": "gradient_clip_val",
    "train.gradient_clip_algorithm": "gradient_clip_algorithm",
    "checkpoint.best": "save_best",
    "checkpoint.last": "save_last",
    "checkpoint.every_n_epochs": "every_n_epochs",
}
LIVE_EARLY_STOPPING = ("early_stopping.patience", "early_stopping.min_delta")
LIVE_KWARGS = ("optimizer", "scheduler")  # sections whose target's keyword arguments may all change live


def is_live(key: str) -> bool:
    """True if the loop can take ``key`` (``section.name``) from its next step."""
    section = key.split(".", 1)[0]
    return key in LIVE_OPTIONS or key in LIVE_EARLY_STOPPING or section in LIVE_KWARGS


class Live:
    """Applies live settings to the loop's parts (every rank applies the same ones at the same step)."""

    def __init__(
        self,
        opt: Options,
        stepper: Stepper,
        telemetry: StepTelemetry,
        checkpoints: Any,  # the Trainer's Checkpoints (their module imports this one): optimizer, scheduler, ...
        ends: EpochEnd,
        progress: Progress,
        emit: Callable[[Event], None],
    ) -> None:
        self.opt, self.stepper, self.telemetry, self.checkpoints = opt, stepper, telemetry, checkpoints
        self.ends, self.progress, self.emit = ends, progress, emit
        self.kept: dict[str, Any] = {}  # the changes of LIVE_OPTIONS and early stopping, for checkpoints

    def change(self, settings: dict[str, Any], source: str = "ctl set") -> None:
        """Apply ``settings`` (spec key -> value) from the next step; one event each."""
        for key, value in settings.items():
            try:
                old = self._set(key, value)
            except (AttributeError, TypeError, ValueError) as e:  # checked by ctl set; a last word here
                self.emit(Message("warning", f"could not set {key} = {value!r}: {e}"))
                continue
            if key in LIVE_OPTIONS or key in LIVE_EARLY_STOPPING:
                self.kept[key] = value
            self.emit(SettingChanged(key, old, value, self.progress.epoch + 1, self.progress.step, source))

    def restore(self, kept: dict[str, Any]) -> None:
        """What a checkpoint's ``settings`` held: applied again, without events (a resume)."""
        for key, value in kept.items():
            if key in LIVE_OPTIONS or key in LIVE_EARLY_STOPPING:
                self._set(key, value)
                self.kept[key] = value

    def _set(self, key: str, value: Any) -> Any:
        """Set one key; returns the value it replaced."""
        section, name = key.split(".", 1)
        if key in LIVE_OPTIONS:
            field = LIVE_OPTIONS[key]
            if field == "epochs" and value <= self.progress.epoch:
                raise ValueError(
                    f"{self.progress.epoch} epochs are done already: set more, or end the run (tuiloop ctl RUN stop)"
                )
            old = getattr(self.opt, field)
            setattr(self.opt, field, value)
            if field == "log_interval":
                self.telemetry.interval = value
            elif field == "gradient_clip_val":
                self.stepper.clip_val = value
            elif field == "gradient_clip_algorithm":
                self.stepper.clip_algorithm = value
            elif field == "save_last":
                self.checkpoints.save_last = value
            return old
        if key in LIVE_EARLY_STOPPING:
            es = self.ends.es
            if es is None:
                raise ValueError("the run has no [early_stopping]")
            old = getattr(es, name)
            setattr(es, name, abs(value) if name == "min_delta" else value)
            return old
        if section == "optimizer":
            return self._set_optimizer(name, value)
        if section == "scheduler":
            return self._set_scheduler(name, value)
        raise ValueError(f"{key} cannot change while the run trains")

    def _set_optimizer(self, name: str, value: Any) -> Any:
        from tuiloop.engine.lr import scale_lr  # lazy: torch; ctl set imports this module for is_live

        optimizer, steering = self.checkpoints.optimizer, self.checkpoints.steering
        groups = optimizer.param_groups
        old = groups[0].get(name)
        if name == "lr":  # as the - and + keys do: the schedule goes on from the new level
            if not isinstance(old, (int, float)) or not old:
                raise ValueError(f"the learning rate is {old!r}, which cannot be scaled")
            scale_lr(optimizer, self.checkpoints.scheduler, value / old)
            steering.lr_scale *= value / old
            return old
        if name not in groups[0]:
            close = difflib.get_close_matches(name, [k for k in groups[0] if k != "params"], n=1)
            meant = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{type(optimizer).__name__} has no setting {name!r}{meant}")
        for group in groups:
            group[name] = tuple(value) if isinstance(group[name], tuple) else value
        return list(old) if isinstance(old, tuple) else old

    def _set_scheduler(self, name: str, value: Any) -> Any:
        sched = self.checkpoints.scheduler
        attr = {"min_lr": "min_lrs"}.get(name, name) if self.ends.plateau else name
        if sched is None or not hasattr(sched, attr):
            raise ValueError(f"{type(sched).__name__} keeps no setting {name!r} that can change")
        old = getattr(sched, attr)
        if attr == "min_lrs" and not isinstance(value, list):
            value = [value] * len(self.checkpoints.optimizer.param_groups)
        setattr(sched, attr, value)
        return old
