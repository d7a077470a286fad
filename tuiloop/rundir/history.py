"""A run's log as a table and as TensorBoard scalars: what ``tuiloop export`` and the live mirror write.

Everything here is rebuilt from ``events.jsonl`` (or, for the live mirror, from the same events as
they happen): one row per training step and one per validation, each kept once, as last logged
(a resumed run redoes the steps its crashed session logged after the checkpoint). tensorboardX
is imported only to write event files, and only when asked; this module never imports torch.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tuiloop.engine.events import Event, EventReader, RunStarted, Tested, TrainSteps, Validated, on
from tuiloop.rundir.eventlog import EventTail, read_events

TENSORBOARD_DIR = "tensorboard"  # RUN_DIR/tensorboard: the live mirror's folder, and export's default
CSV_FILE = "export.csv"
EXPORT_SUFFIX = ".tuiloop-export"  # ends the name of the event file an export writes (a new export replaces it)
INSTALL = "pip install 'tuiloop[tensorboard]'"
STEP_COLUMNS = ("kind", "epoch", "step", "time", "train_loss", "lr", "grad_norm", "samples_per_s")


# ---- what a run logged ---------------------------------------------------------------------
@dataclass(frozen=True)
class StepRow:
    """One optimizer step: its loss and the learning rate, gradient norm and throughput logged with it."""

    epoch: int
    step: int
    time: float  # when the batch of steps holding it was logged
    train_loss: float
    lr: float
    grad_norm: float | None
    samples_per_s: float


@dataclass(frozen=True)
class ValidationRow:
    """One validation check: ``metrics`` holds train_loss (the epoch's mean) and val_loss, val_<metric>."""

    epoch: int
    step: int
    time: float
    metrics: dict[str, float]


@dataclass(frozen=True)
class FinalTestRow(ValidationRow):
    """The test split evaluated at the end: ``metrics`` holds test_loss, test_<metric>; ``epoch``
    and ``step`` say where the tested weights (``checkpoint``; '' for the final ones) are from."""

    checkpoint: str = ""


@dataclass
class History(EventReader):
    """A run's steps and validations, each once: the last time it was logged; and its test."""

    steps: dict[int, StepRow] = field(default_factory=dict)
    validations: dict[tuple[int, int], ValidationRow] = field(default_factory=dict)  # by (epoch, step)
    metrics: list[str] = field(default_factory=list)  # validation metric names, in the order first seen
    test: FinalTestRow | None = None  # the last test of the split at a run's end

    add = EventReader.dispatch  # take one event (of any kind)

    @on(RunStarted)
    def _started(self, ev: RunStarted) -> None:
        if ev.resumed_from:  # forget what the crashed session logged after its checkpoint
            self.steps = {s: row for s, row in self.steps.items() if s <= ev.start_step}
            self.validations = {k: row for k, row in self.validations.items() if row.step <= ev.start_step}

    @on(TrainSteps)
    def _train_steps(self, ev: TrainSteps) -> None:
        for row in step_rows(ev):
            self.steps[row.step] = row

    @on(Validated)
    def _validated(self, ev: Validated) -> None:
        row = validation_row(ev)
        self.validations[(row.epoch, row.step)] = row
        self.metrics.extend(name for name in row.metrics if name not in self.metrics)

    @on(Tested)
    def _tested(self, ev: Tested) -> None:
        self.test = test_row(ev)
        self.metrics.extend(name for name in ev.metrics if name not in self.metrics)

    def rows(self) -> list[StepRow | ValidationRow]:
        """Steps and validations in step order (a validation follows the step it ran after), then the test."""
        rows: list[StepRow | ValidationRow] = [*self.steps.values(), *self.validations.values()]
        rows.sort(key=lambda r: (r.step, isinstance(r, ValidationRow), r.epoch))
        return rows + ([self.test] if self.test is not None else [])


def step_rows(event: TrainSteps) -> list[StepRow]:
    """The steps of one ``train_steps`` event, one row each."""
    norms = event.grad_norms or []
    return [
        StepRow(
            event.epoch,
            event.first_step + i,
            event.time,
            loss,
            event.lr,
            norms[i] if i < len(norms) else None,
            event.samples_per_s,
        )
        for i, loss in enumerate(event.losses)
    ]


def validation_row(event: Validated) -> ValidationRow:
    """One ``validated`` event as a row."""
    return ValidationRow(event.epoch, event.step, event.time, dict(event.metrics))


def test_row(event: Tested) -> FinalTestRow:
    """One ``tested`` event as a row."""
    return FinalTestRow(event.epoch, event.step, event.time, dict(event.metrics), event.checkpoint)


def history(events: Iterable[Event]) -> History:
    """The steps and validations of ``events``, each once."""
    h = History()
    for event in events:
        h.add(event)
    return h


def read_history(run_dir: Path) -> tuple[History, EventTail]:
    """What a finished, crashed or live run has logged so far, and the reader (its ``problems`` say what was skipped)."""
    events, tail = read_events(run_dir)
    return history(events), tail


# ---- CSV -----------------------------------------------------------------------------------
def csv_columns(h: History) -> list[str]:
    """The fixed columns, then one per validation metric (train_loss has its own column)."""
    return [*STEP_COLUMNS, *(m for m in h.metrics if m not in STEP_COLUMNS)]


def csv_rows(h: History) -> Iterator[dict[str, Any]]:
    """One dict per step (kind "step") and per validation (kind "validation"), keyed by column."""
    for row in h.rows():
        if isinstance(row, StepRow):
            yield {
                "kind": "step",
                "epoch": row.epoch,
                "step": row.step,
                "time": row.time,
                "train_loss": row.train_loss,
                "lr": row.lr,
                "grad_norm": row.grad_norm,
                "samples_per_s": row.samples_per_s,
            }
        else:
            kind = "test" if isinstance(row, FinalTestRow) else "validation"
            yield {"kind": kind, "epoch": row.epoch, "step": row.step, "time": row.time, **row.metrics}


def write_csv(h: History, stream: IO[str]) -> int:
    """Write the table to ``stream`` (open it with ``newline=""``); returns the number of rows. Empty cells: not logged."""
    writer = csv.DictWriter(stream, fieldnames=csv_columns(h), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    rows = list(csv_rows(h))
    writer.writerows(rows)
    return len(rows)


# ---- TensorBoard scalars -------------------------------------------------------------------
@dataclass(frozen=True)
class Scalar:
    """One point of a TensorBoard scalar plot."""

    tag: str
    value: float
    step: int
    wall_time: float


def metric_tag(name: str) -> str:
    """The TensorBoard tag of a metric: val_loss -> val/loss, test_acc -> test/acc, train_loss -> train/epoch_loss."""
    if name == "train_loss":
        return "train/epoch_loss"
    if name.startswith("test_"):
        return "test/" + name.removeprefix("test_")
    return "val/" + name.removeprefix("val_")


def row_scalars(row: StepRow | ValidationRow) -> list[Scalar]:
    """train/loss, train/lr, train/grad_norm (when measured) and train/samples_per_s of a step; a validation's metrics."""
    if isinstance(row, ValidationRow):
        return [Scalar(metric_tag(name), value, row.step, row.time) for name, value in row.metrics.items()]
    out = [Scalar("train/loss", row.train_loss, row.step, row.time), Scalar("train/lr", row.lr, row.step, row.time)]
    if row.grad_norm is not None:
        out.append(Scalar("train/grad_norm", row.grad_norm, row.step, row.time))
    out.append(Scalar("train/samples_per_s", row.samples_per_s, row.step, row.time))
    return out


def history_scalars(h: History) -> Iterator[Scalar]:
    """Every scalar of a run, in step order."""
    for row in h.rows():
        yield from row_scalars(row)


class TensorBoardXMissing(ImportError):
    """tensorboardX is not installed (or cannot be imported)."""


def require_tensorboardx() -> None:
    """Import tensorboardX's event writer; raise :class:`TensorBoardXMissing` saying how to install it."""
    try:
        import tensorboardX.event_file_writer  # noqa: F401  # lazy: optional dependency
    except ImportError as e:
        raise TensorBoardXMissing(
            f"writing TensorBoard event files needs tensorboardX, which cannot be imported ({e}); install it with: {INSTALL}"
        ) from e


class ScalarFile:
    """One TensorBoard event file written with tensorboardX, synchronously (its SummaryWriter costs
    ~7x more per scalar, through a multiprocessing queue). ``purge_step``: TensorBoard hides the
    points of earlier files from that step on (a resumed run redoes them)."""

    def __init__(self, logdir: Path, suffix: str, purge_step: int | None = None) -> None:
        require_tensorboardx()
        from tensorboardX.event_file_writer import EventsWriter  # lazy: optional dependency
        from tensorboardX.proto.event_pb2 import Event as PbEvent  # lazy: optional dependency
        from tensorboardX.proto.event_pb2 import SessionLog  # lazy: optional dependency
        from tensorboardX.proto.summary_pb2 import Summary  # lazy: optional dependency

        self._event, self._summary = PbEvent, Summary
        logdir.mkdir(parents=True, exist_ok=True)
        self._writer = EventsWriter(str(logdir / "events"), suffix)  # events.out.tfevents.<time>.<host><suffix>
        if purge_step is not None:
            self._writer.write_event(
                PbEvent(wall_time=time.time(), step=purge_step, session_log=SessionLog(status=SessionLog.START))
            )

    def add(self, scalars: Iterable[Scalar]) -> int:
        """Append scalars; returns how many."""
        n = 0
        for s in scalars:
            value = self._summary.Value(tag=s.tag, simple_value=float(s.value))
            self._writer.write_event(
                self._event(wall_time=s.wall_time, step=s.step, summary=self._summary(value=[value]))
            )
            n += 1
        return n

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def write_tensorboard(h: History, logdir: Path) -> int:
    """Write every scalar of ``h`` into a new event file under ``logdir``, replacing an earlier export's; returns how many."""
    require_tensorboardx()  # before the earlier export goes
    for old in logdir.glob(f"events.out.tfevents.*{EXPORT_SUFFIX}"):
        old.unlink(missing_ok=True)
    f = ScalarFile(logdir, EXPORT_SUFFIX)
    try:
        return f.add(history_scalars(h))
    finally:
        f.close()


def other_event_files(logdir: Path) -> list[Path]:
    """TensorBoard event files in ``logdir`` that no export wrote (the live mirror's)."""
    return (
        sorted(p for p in logdir.glob("events.out.tfevents.*") if not p.name.endswith(EXPORT_SUFFIX))
        if logdir.is_dir()
        else []
    )
