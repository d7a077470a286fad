"""Several runs side by side (``tuiloop compare``): per-epoch validation metrics, how each run
stands, and the spec values that differ between them.

UI-free: the command's plain table and its Textual screen both read a :class:`Comparison`.
Reading and applying are split so a view can read in a thread and apply on its own: each run's
:class:`RunReader` keeps an :class:`EventTail`, so a live run costs only what it appended.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuiloop.engine.best import higher_is_better
from tuiloop.engine.events import (
    CheckpointSaved,
    Event,
    EventReader,
    Finished,
    RunStarted,
    SettingChanged,
    StateChanged,
    TrainSteps,
    Validated,
    on,
)
from tuiloop.rundir.digest import DigestLoaded
from tuiloop.rundir.eventlog import EventTail
from tuiloop.rundir.layout import SPEC
from tuiloop.rundir.state import run_state
from tuiloop.spec.load import tomllib  # tomli on Python 3.10

MISSING = "-"  # a spec key one run does not have
_STAMPED = re.compile(r"^(?P<base>.+)-\d{8}-\d{6}-(?P<tag>[0-9a-f]{4})$")  # <name>-<date>-<time>-<4 hex>


# ---- the spec -----------------------------------------------------------------------------
def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys: ``{"optimizer": {"lr": 0.1}}`` -> ``{"optimizer.lr": 0.1}``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal as TOML values (``1 == 1.0``, but ``true`` is not ``1``)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def differing_keys(specs: Sequence[dict[str, Any] | None]) -> list[str]:
    """The dotted keys whose values differ between the flattened specs, in the order they first
    appear; a key missing from one spec differs. Specs that are None (no spec.toml) are left out."""
    known = [s for s in specs if s is not None]
    order: dict[str, None] = {}
    for spec in known:
        order.update(dict.fromkeys(spec))
    sections = list(dict.fromkeys(key.split(".")[0] for key in order))
    out = []
    for key in sorted(order, key=lambda k: sections.index(k.split(".")[0])):  # stable: a section's keys stay together
        if any(key not in s for s in known):
            out.append(key)
        elif any(not _same(s[key], known[0][key]) for s in known[1:]):
            out.append(key)
    return out


def format_value(value: Any) -> str:
    """A spec value as TOML writes it, except that a number reads the same whether TOML holds it
    as an integer or a float (``20`` beside ``5``, ``2e-05`` beside ``0.001``, as log lines write a
    learning rate); floats keep every digit, so two different values never read the same."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _number(value: float) -> str:
    """The shortest text that reads back as the same number, without a float's ``.0``: 20, 5, 2e-05, 1e+16."""
    if isinstance(value, int) and float(value) != value:
        return str(value)  # an integer too big for a float's 53 bits: every digit counts
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def read_spec(run_dir: Path) -> dict[str, Any] | None:
    """The run's saved spec, flattened; None without a readable spec.toml (a run started from Python)."""
    try:
        return flatten(tomllib.loads((run_dir / SPEC).read_text(encoding="utf-8")))
    except (OSError, ValueError, RecursionError):
        return None


def short_names(names: Sequence[str]) -> list[str]:
    """Names for a legend: the run names without their time stamps, plus the 4 hex of the stamp
    where two runs share a name; the full names if that is still ambiguous."""
    matches = [_STAMPED.match(n) for n in names]
    bases = [m["base"] if m else n for m, n in zip(matches, names, strict=True)]
    out = [f"{b}-{m['tag']}" if m and bases.count(b) > 1 else b for m, b in zip(matches, bases, strict=True)]
    return out if len(set(out)) == len(out) else list(names)


# ---- one run ------------------------------------------------------------------------------
@dataclass
class RunHistory(EventReader):
    """What compare shows of one run: its validations by epoch (the latest timeline of a resumed
    run), its progress and state, and its spec. Fed by :meth:`apply` and :meth:`set_state`."""

    path: Path
    state: str = "starting"  # as ls says it: running, finished, crashed, ...
    detail: str = ""
    values: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> epoch -> value
    best_flags: dict[int, bool] = field(default_factory=dict)  # epoch -> whether the engine called it best
    monitor: str | None = None
    mode: str = "min"
    modes: dict[str, str] = field(default_factory=dict)  # which way each metric improves, as the run said
    epochs: int | None = None  # planned
    epochs_done: int = 0
    paused: bool = False
    spec: dict[str, Any] | None = None  # flattened spec.toml
    skipped: int = 0  # lines of its log that could not be read
    skipped_why: list[str] = field(default_factory=list)  # why (the first few)
    problems: list[str] = field(default_factory=list)  # what of run.json and summary.json could not be read
    version: int = 0  # bumped on every change

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def shown_state(self) -> str:
        return "paused" if self.state == "running" and self.paused else self.state

    @property
    def live(self) -> bool:
        return self.state == "running"

    def apply(self, events: Iterable[Event]) -> bool:
        """Take the run's next events; True if anything compare shows changed."""
        before = self.version
        for ev in events:
            self.dispatch(ev)  # each handler bumps the version if it changed what compare shows
        return self.version != before

    @on(Validated)
    def _validated(self, ev: Validated) -> None:
        for name, value in ev.metrics.items():
            if isinstance(value, (int, float)):
                self.values.setdefault(name, {})[ev.epoch] = float(value)  # a resumed session's wins
        self.best_flags[ev.epoch] = ev.is_best
        self.epochs_done = max(self.epochs_done, ev.epoch)
        self.version += 1

    @on(TrainSteps)
    def _train_steps(self, ev: TrainSteps) -> None:
        if ev.epoch - 1 > self.epochs_done:  # usually not: nothing new to show
            self.epochs_done = ev.epoch - 1
            self.version += 1

    @on(RunStarted)
    def _start(self, ev: RunStarted) -> None:
        """A (re)start: a resumed session trains again from its checkpoint, so what the earlier
        session logged after that point belongs to a timeline that no longer exists."""
        self.monitor, self.mode, self.epochs = ev.monitor, ev.mode, ev.epochs
        self.modes = dict(ev.modes)
        self.epochs_done = ev.start_epoch
        self.paused = False
        for series in self.values.values():
            for epoch in [e for e in series if e > ev.start_epoch]:
                del series[epoch]
        self.best_flags = {e: b for e, b in self.best_flags.items() if e <= ev.start_epoch}
        self.version += 1

    @on(CheckpointSaved)
    def _checkpoint(self, ev: CheckpointSaved) -> None:
        if ev.tag == "periodic":  # at an epoch's end; another save may come mid-epoch (s, a stop)
            self.epochs_done = max(self.epochs_done, ev.epoch)
            self.version += 1

    @on(SettingChanged)
    def _setting(self, ev: SettingChanged) -> None:
        if ev.key == "run.epochs" and isinstance(ev.new, int):  # tuiloop ctl RUN set run.epochs=N
            self.epochs = ev.new
            self.version += 1

    @on(Finished)
    def _finished(self, ev: Finished) -> None:
        self.epochs_done = max(self.epochs_done, ev.epochs_done)
        self.paused = False
        self.version += 1

    @on(StateChanged)
    def _state(self, ev: StateChanged) -> None:
        self.paused = ev.state == "paused"
        self.version += 1

    @on(DigestLoaded)
    def _digest_loaded(self, ev: DigestLoaded) -> None:  # the step lines before it were not read: where they got to
        self.epochs_done = max(self.epochs_done, ev.digest.epoch - 1)
        self.version += 1

    def set_state(self, state: str, detail: str = "") -> bool:
        if (state, detail) == (self.state, self.detail):
            return False
        self.state, self.detail = state, detail
        self.version += 1
        return True

    def set_spec(self, spec: dict[str, Any] | None) -> bool:
        if spec == self.spec:
            return False
        self.spec = spec
        self.version += 1
        return True

    def metric_names(self) -> list[str]:
        return [name for name, series in self.values.items() if series]

    def points(self, metric: str) -> tuple[list[int], list[float]]:
        """The metric by epoch, finite values only, in epoch order."""
        pairs = sorted((e, v) for e, v in (self.values.get(metric) or {}).items() if math.isfinite(v))
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def best(self, metric: str, higher_is_better: bool) -> tuple[int, float] | None:
        """(epoch, value) of the best validation of ``metric``. For the run's own monitor this is
        the check the engine called best (min_delta included), as ``ls`` and best.pt have it."""
        xs, ys = self.points(metric)
        if not xs:
            return None
        if metric == self.monitor:
            flagged = [i for i, e in enumerate(xs) if self.best_flags.get(e)]
            if flagged:
                return xs[flagged[-1]], ys[flagged[-1]]
            higher_is_better = self.mode == "max"
        pick = max if higher_is_better else min  # the first of equals: the earliest epoch
        i = pick(range(len(ys)), key=lambda k: ys[k])
        return xs[i], ys[i]


# ---- reading ------------------------------------------------------------------------------
@dataclass
class RunUpdate:
    """What one read of a run found: new events, its state, and its spec if that file changed."""

    events: list[Event]
    state: str
    detail: str
    spec_changed: bool
    spec: dict[str, Any] | None
    skipped: int
    skipped_why: list[str]
    problems: list[str]


class RunReader:
    """Reads one run directory incrementally (its own thread may call :meth:`read`)."""

    CHUNK = 4 << 20

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir
        self.tail = EventTail(run_dir, from_digest=True)  # a long run: only its validations and the like are read
        self._spec_stamp: tuple[int, int] | None = None
        self._first = True

    def read(self) -> RunUpdate:
        events: list[Event] = []
        while batch := self.tail.poll(self.CHUNK):
            events.extend(batch)
        problems: list[str] = []
        try:
            st = run_state(self.path)
            state, detail = st.state, st.detail
            problems = st.problems
        except OSError as e:  # another user's run, or a folder gone
            state, detail = "unreadable", str(e)
        stamp = self._stamp()
        changed = self._first or stamp != self._spec_stamp
        self._first, self._spec_stamp = False, stamp
        spec = read_spec(self.path) if changed else None
        return RunUpdate(events, state, detail, changed, spec, self.tail.skipped, self.tail.problems[:3], problems)

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = (self.path / SPEC).stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size


# ---- several runs -------------------------------------------------------------------------
class Comparison:
    """The runs being compared. The best of a metric that is not a run's own monitor is its
    highest or lowest as :func:`~tuiloop.engine.best.higher_is_better` says (for its monitor,
    the run's mode decides).

    :meth:`poll` reads and applies in one go; a view with a reader thread calls :meth:`read`
    there and :meth:`apply` on its own thread.
    """

    def __init__(self, run_dirs: Sequence[Path]) -> None:
        self.runs = [RunHistory(Path(p)) for p in run_dirs]
        self.names = short_names([r.name for r in self.runs])
        self._readers = [RunReader(Path(p)) for p in run_dirs]
        self.version = 0
        self.poll()

    def read(self) -> list[RunUpdate]:
        """Read every run's news (safe off the UI thread: touches only the readers)."""
        return [reader.read() for reader in self._readers]

    def apply(self, updates: Sequence[RunUpdate]) -> bool:
        """Take what :meth:`read` found; True if anything shown changed."""
        changed = False
        for run, up in zip(self.runs, updates, strict=True):
            changed |= run.apply(up.events)
            changed |= run.set_state(up.state, up.detail)
            if up.spec_changed:
                changed |= run.set_spec(up.spec)
            run.skipped, run.skipped_why, run.problems = up.skipped, up.skipped_why, up.problems
        if changed:
            self.version += 1
        return changed

    def poll(self) -> bool:
        return self.apply(self.read())

    @property
    def any_live(self) -> bool:
        return any(r.live for r in self.runs)

    def metric_names(self) -> list[str]:
        """Every metric some run validated: val_loss first, then the other val_ metrics, then the rest."""
        names = {n for r in self.runs for n in r.metric_names()}
        return sorted(names, key=lambda n: (n != "val_loss", not n.startswith("val_"), n != "train_loss", n))

    def default_metric(self) -> str:
        names = self.metric_names()
        return names[0] if names else "val_loss"

    def higher_is_better(self, run: RunHistory, metric: str) -> bool:
        if metric == run.monitor:
            return run.mode == "max"
        return run.modes[metric] == "max" if metric in run.modes else higher_is_better(metric)

    def best(self, run: RunHistory, metric: str) -> tuple[int, float] | None:
        return run.best(metric, self.higher_is_better(run, metric))

    def differing(self) -> list[tuple[str, list[str]]]:
        """The spec keys whose values differ, each with every run's value (``-``: the run has no
        such key; ``?``: the run has no spec.toml)."""
        specs = [r.spec for r in self.runs]
        keys = [k for k in differing_keys(specs) if k != "run.name"]  # the runs' names head their columns already
        return [
            (key, ["?" if s is None else format_value(s[key]) if key in s else MISSING for s in specs]) for key in keys
        ]
