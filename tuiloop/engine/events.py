"""Events the engine emits: small frozen dataclasses, one JSON line each in ``events.jsonl``.

The hot path never builds one event per step: per-step training losses are buffered and
emitted together as one :class:`TrainSteps` a few times a second.

Each event class registers itself under its ``kind`` (:data:`EVENT_TYPES`, which the log's
decoder reads). Every reader of events subclasses :class:`EventReader` and marks its handlers
with :func:`on`; the sentences a person reads about them are in :mod:`tuiloop.engine.sentences`.

Epochs are counted from 1 everywhere, as the screen shows them: ``epoch`` of a step is the epoch
it belongs to, ``epoch`` of a validation is the epoch just completed, and ``epochs_done`` /
``best_epoch`` count completed epochs. Steps are optimizer steps, also from 1.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from tuiloop.engine.json_types import Check, field_checks

# Compact JSON (item, key): an event's line in events.jsonl, whose readers tell a line's kind
# by its first bytes (line_prefix).
JSON_SEPARATORS = (",", ":")


def now() -> float:
    """Wall-clock time stamp used on every event."""
    return time.time()


# kind -> class of every event written to the log, filled by the classes as they are defined
EVENT_TYPES: dict[str, type[Event]] = {}


@dataclass(frozen=True)
class Event:
    """Base class: every event has a wall-clock time and a stable ``kind`` name.

    A subclass registers itself in :data:`EVENT_TYPES` under its own ``kind``; one that never
    goes into the log (a reader's stand-in) says ``logged=False``.
    """

    kind: ClassVar[str] = "event"
    time: float = field(default_factory=now, kw_only=True)

    def __init_subclass__(cls, logged: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} names no kind")
        if logged:
            if cls.kind in EVENT_TYPES:
                raise TypeError(f"{cls.__name__}: kind {cls.kind!r} is {EVENT_TYPES[cls.kind].__name__}'s")
            EVENT_TYPES[cls.kind] = cls

    def to_dict(self) -> dict[str, Any]:
        """``{"event": kind, **fields}``: the kind first, so a reader can tell a line by its start."""
        # Shallow: events hold no nested dataclasses, and asdict's deep copy of a TrainSteps
        # loss list costs ~0.7 us per loss on the training thread.
        return {"event": self.kind, **self.__dict__}

    def to_json(self) -> str:
        """The event as one compact JSON object: its line in ``events.jsonl``."""
        return json.dumps(self.to_dict(), allow_nan=True, separators=JSON_SEPARATORS)


@dataclass(frozen=True)
class Starting(Event):
    """What the run is doing before it trains: importing torch, building the model, loading data."""

    kind: ClassVar[str] = "starting"
    phase: str


@dataclass(frozen=True)
class RunStarted(Event):
    """The run is set up and about to train (also emitted again on resume)."""

    kind: ClassVar[str] = "run_started"
    run_name: str
    run_dir: str
    device: str
    device_name: str
    epochs: int
    steps_per_epoch: int | None
    batch_size: int | None
    train_size: int | None
    val_size: int | None
    problem: str
    metrics: list[str]
    monitor: str | None
    mode: str
    patience: int | None
    num_params: int
    start_epoch: int = 0
    start_step: int = 0
    resumed_from: str | None = None
    pid: int = 0
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    session: str = ""  # which start of the run this is (a resumed run's log holds several)
    world_size: int = 1  # processes training together (DDP); batch_size is per process
    backend: str = ""  # gloo | nccl in a distributed run
    nodes: list[str] = field(default_factory=list)  # their machines
    commands: list[str] | None = None  # the commands the run obeys (None: every one; tuiloop.track: fewer)
    modes: dict[str, str] = field(default_factory=dict)  # which way each metric improves: "max" | "min"
    loop: str = "spec"  # what trains: spec (tuiloop's engine), track, transformers (HF Trainer), lightning
    max_steps: int | None = None  # the planned steps where the loop says (a Trainer's max_steps); else epochs x steps


@dataclass(frozen=True)
class TrainSteps(Event):
    """Per-step training losses for steps ``first_step .. first_step+len(losses)-1`` (1-based).

    A step is an optimizer step: with gradient accumulation its loss is the mean over its group.
    """

    kind: ClassVar[str] = "train_steps"
    epoch: int  # the epoch these steps belong to (from 1)
    first_step: int  # global step number of losses[0]
    losses: list[float]
    step_in_epoch: int  # steps done in this epoch after the last loss
    lr: float
    samples_per_s: float
    grad_norms: list[float] | None = None  # total gradient norm before clipping, per step (when measured)
    loss_scale: float | None = None  # the grad scaler's scale after these steps (16-mixed)
    skipped_steps: int = 0  # of these steps, those the grad scaler skipped (16-mixed: inf/NaN gradients)
    tokens_per_s: float | None = None  # batches of token sequences: their tokens a second (else None)


@dataclass(frozen=True)
class Validated(Event):
    """A validation check finished; ``metrics`` holds train_loss, val_loss and val_<metric>."""

    kind: ClassVar[str] = "validated"
    epoch: int  # the epoch that just finished (from 1)
    step: int
    metrics: dict[str, float]
    is_best: bool
    duration_s: float


@dataclass(frozen=True)
class Tested(Event):
    """The test split, evaluated once when the run ended, on the weights of ``checkpoint`` (best.pt;
    '' for the weights the run ended with, when there is no best.pt); ``metrics`` holds test_loss
    and test_<metric>; ``epoch`` and ``step`` say where those weights are from."""

    kind: ClassVar[str] = "tested"
    __test__: ClassVar[bool] = False  # its name starts with Test: not a class of tests for pytest
    checkpoint: str  # checkpoints/best.pt, or "" (the final weights)
    epoch: int
    step: int
    metrics: dict[str, float]
    samples: int | None  # in the test split (None: an iterable of unknown length)
    duration_s: float
    sha256: str | None = None  # of the checkpoint's bytes, as its save recorded them


@dataclass(frozen=True)
class LRChanged(Event):
    """The learning rate of the first parameter group changed."""

    kind: ClassVar[str] = "lr_changed"
    epoch: int
    step: int
    lr: float
    previous: float


@dataclass(frozen=True)
class EarlyStopUpdate(Event):
    """Early-stopping state after a validation check; ``triggered`` ends the run."""

    kind: ClassVar[str] = "early_stop"
    epoch: int
    monitor: str
    value: float
    best: float | None  # None while every check was NaN
    counter: int
    patience: int
    triggered: bool


@dataclass(frozen=True)
class CheckpointSaved(Event):
    """A checkpoint file was written atomically; ``path`` is relative to the run directory.

    ``epoch`` is the epoch the saved state is in: the epoch just completed for a save at its end,
    the epoch in progress for a save in the middle of one (``s``, a stop)."""

    kind: ClassVar[str] = "checkpoint"
    tag: str  # best | last | periodic | manual
    path: str
    epoch: int
    step: int
    metric: float | None
    monitor: str | None
    sha256: str | None = None  # of the file's bytes (None in logs of older versions); a resume checks it


@dataclass(frozen=True)
class SettingChanged(Event):
    """A setting of the run changed while it ran or when it was resumed (``source`` says how)."""

    kind: ClassVar[str] = "setting_changed"
    key: str  # as in the spec: "optimizer.lr", "run.epochs"
    old: Any
    new: Any
    epoch: int
    step: int
    source: str  # "resume --set", "key +", ...


@dataclass(frozen=True)
class StateChanged(Event):
    """The run's state changed: running, paused or stopping (``step``: the steps done when it did)."""

    kind: ClassVar[str] = "state"
    state: str
    reason: str = ""
    step: int = 0


@dataclass(frozen=True)
class Stalled(Event):
    """No training step and no validation batch for ``quiet_s`` seconds (``after_s``: the limit);
    the loop's thread was in ``where`` (the innermost frame of the user's code, else the innermost
    outside tuiloop), ``stack`` its frames as a traceback prints them, innermost last. A
    ``state`` event (running) follows once steps come again."""

    kind: ClassVar[str] = "stalled"
    quiet_s: float
    after_s: float
    step: int
    where: str
    stack: list[str] = field(default_factory=list)
    rank: int = 0  # in a distributed run, the rank whose loop this is (rank 0 logs what another reported)


@dataclass(frozen=True)
class Message(Event):
    """A line for the log: ``level`` is info, warning or error."""

    kind: ClassVar[str] = "message"
    level: str
    text: str


@dataclass(frozen=True)
class Failed(Event):
    """User code raised: what, where, and the formatted traceback."""

    kind: ClassVar[str] = "failed"
    error: str
    where: str
    traceback: str
    user_frames: list[str] = field(default_factory=list)  # the traceback's frames in the user's code


@dataclass(frozen=True)
class Finished(Event):
    """The run ended; ``status`` is completed, early_stopped, stopped, suspended, failed or forced."""

    kind: ClassVar[str] = "finished"
    status: str
    reason: str
    epochs_done: int
    step: int
    best_value: float | None
    best_epoch: int | None
    monitor: str | None
    wall_time_s: float


@dataclass(frozen=True)
class SystemSample(Event):
    """The machine's load, sampled every few seconds off the training thread (rank 0 only).

    Sizes are in bytes. ``gpus`` holds one dict per GPU the run can see: ``index`` (NVML's,
    as nvidia-smi numbers them), ``name``, ``util`` (%), ``mem_used``, ``mem_total``, ``temp``
    (°C) and ``power_w``; a value the GPU does not report is None. Empty without NVIDIA GPUs.
    """

    kind: ClassVar[str] = "system_sample"
    cpu_percent: float  # the whole machine, all cores (0-100)
    ram_used: int  # the machine's memory in use (total - available)
    ram_total: int
    rss: int  # resident memory of the training process
    proc_cpu: float | None = None  # the training process's CPU %, per core (400 = four cores busy)
    torch_peak_bytes: int | None = None  # torch.cuda.max_memory_allocated on the run's device (None off CUDA)
    gpus: list[dict[str, Any]] = field(default_factory=list)


def line_prefix(kind: str) -> bytes:
    """How the line (:meth:`Event.to_json`) of every event of ``kind`` starts, to skip them unparsed."""
    item, key = JSON_SEPARATORS
    return ("{" + json.dumps("event") + key + json.dumps(kind) + item).encode()


_CHECKS: dict[type[Event], dict[str, Check]] = {}


def event_from_dict(d: dict[str, Any]) -> Event:
    """Rebuild an event from its JSON dict; raises ValueError for an unknown kind or a missing field.

    Fields this version does not know (written by a newer tuiloop) are dropped; a field whose
    value does not have its declared type raises ValueError too.
    """
    kind = d.get("event")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown event type {kind!r} (written by a newer tuiloop?)")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    missing = [
        n
        for n, f in fields.items()
        if n not in d and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{kind!r} event without {', '.join(missing)}")
    checks = _CHECKS.get(cls) or _CHECKS.setdefault(cls, field_checks(cls))
    for name, value in d.items():  # a damaged or hand-written line must not reach a view
        check = checks.get(name)
        if check is not None and (wrong := check(value)):
            raise ValueError(f"{kind!r} event whose {name} is {wrong}")
    return cls(**{k: v for k, v in d.items() if k in fields})


# ---- reading events ------------------------------------------------------------------------------
Handler = TypeVar("Handler", bound=Callable[..., Any])
_TAKES = "_tuiloop_takes"  # the attribute that on() sets on a handler: the event types it takes


def on(*types: type[Event]) -> Callable[[Handler], Handler]:
    """Mark a method of an :class:`EventReader` as the one that takes events of ``types``."""

    def mark(method: Handler) -> Handler:
        setattr(method, _TAKES, (*getattr(method, _TAKES, ()), *types))
        return method

    return mark


class EventReader:
    """Base of every class that reads events: its methods marked :func:`on` take their types.

    The table (type -> handler) is built once per class, from the marks of the class and its
    bases (a subclass may override a handler by its name), so :meth:`dispatch` costs one dict
    lookup by the event's exact type: views read day-long logs with millions of steps.
    """

    handlers: ClassVar[dict[type[Event], Callable[[Any, Any], Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names: dict[type[Event], str] = {}
        for klass in reversed(cls.__mro__):
            for name, member in vars(klass).items():
                for t in getattr(member, _TAKES, ()):
                    names[t] = name
        cls.handlers = {t: getattr(cls, name) for t, name in names.items()}

    def dispatch(self, ev: Event) -> bool:
        """Hand ``ev`` to its handler; False if this reader has none for its type."""
        handler = self.handlers.get(type(ev))
        if handler is None:
            return False
        handler(self, ev)
        return True
