"""What a run's many small events add up to: its plot series and where it stands.

Per-step loss lines (``train_steps``) and machine samples (``system_sample``) are nearly all of
a long run's event log. :class:`RunDigest` takes every event and keeps what views derive from
those two kinds: the loss, learning-rate and health series (downsampled, so its size does not
grow with the run), the step, epoch and learning rate, and the machine's load. Two owners feed
the same class with the same events, so they cannot disagree:

* the monitor's :class:`~tuiloop.tui.model.MonitorModel`, which keeps these fields in a digest;
* the training process's event writer (:class:`~tuiloop.rundir.eventlog.EventLog`), which saves
  its digest beside the log every 30 s (:mod:`tuiloop.rundir.digest_file`), so a view of a long run
  loads that (:func:`load_digest`) and reads only the other events before it, then the
  digest in their place (:class:`DigestLoaded`).

Rule: everything a view derives from the kinds in :data:`RunDigest.KINDS` lives here, because
readers skip those lines before a saved digest. Other events may update a digest too (a validation
adds a point to ``val``; a resume drops the steps done again); they are read either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tuiloop.engine.events import (
    Event,
    EventReader,
    Finished,
    LRChanged,
    RunStarted,
    SettingChanged,
    Starting,
    StateChanged,
    SystemSample,
    TrainSteps,
    Validated,
    event_from_dict,
    on,
)
from tuiloop.rundir.digest_file import DIGESTED_KINDS, SavedDigest, read_digest_file
from tuiloop.rundir.series import Downsampled, Recent


@dataclass
class GpuStat:
    """One GPU over the run: its utilisation history (x = time), peak memory and mean utilisation."""

    index: int
    name: str
    util: Downsampled = field(default_factory=lambda: Downsampled(128))
    mem_peak: int = 0
    mem_total: int = 0
    util_sum: float = 0.0
    util_n: int = 0

    @property
    def mean_util(self) -> float | None:
        return self.util_sum / self.util_n if self.util_n else None


# the digest's series and their resolutions; train and val take the view's resolution
_SERIES = ("train", "val", "lr_history", "grad_norms", "loss_scales", "throughput", "step_times", "cpu_history")
_optional = lambda kind: lambda v: None if v is None else kind(v)  # noqa: E731
_SCALARS: dict[str, Callable[[Any], Any]] = {
    "phase": _optional(str), "phase_since": _optional(float), "epoch": int, "step_in_epoch": int, "step": int,
    "lr": _optional(float), "samples_per_s": _optional(float), "tokens_per_s": _optional(float),
    "loss_scale": _optional(float), "skipped_steps": int, "active_steps": int, "running": bool,
    "system_samples": int, "cpu_sum": float, "rss_peak": int, "torch_peak": _optional(int),
}  # fmt: skip
_ADDED = ("tokens_per_s",)  # scalars a digest saved before them lacks: read as None


class RunDigest(EventReader):
    """The series and progress of a run, fed with its events in order (see the module's rule)."""

    KINDS = DIGESTED_KINDS  # ("train_steps", "system_sample"): lines a reader may skip before a saved digest's offset

    def __init__(self, resolution: int = 512) -> None:
        self.phase: str | None = None  # what a starting run is doing (importing torch, loading the data, ...)
        self.phase_since: float | None = None  # since when
        self.epoch = 1  # the epoch in progress, or the last one (from 1)
        self.step_in_epoch = 0
        self.step = 0  # global optimizer steps done
        self.lr: float | None = None
        self.samples_per_s: float | None = None  # smoothed
        self.tokens_per_s: float | None = None  # smoothed, for batches of token sequences
        self.train = Downsampled(resolution)  # x = global step
        self.train_recent = Recent()  # its last steps one by one, for a zoomed plot
        self.val = Downsampled(resolution)  # val_loss, x = global step
        self.lr_history = Downsampled(128)
        self.grad_norms = Downsampled(256)  # total gradient norm before clipping, x = step
        self.throughput = Downsampled(128)  # samples/s per flush, x = step
        self.step_times = Downsampled(256)  # wall time of the steps (x = step), for a time axis
        self.loss_scale: float | None = None  # 16-mixed's grad scaler
        self.loss_scales = Downsampled(128)  # its history, x = step
        self.skipped_steps = 0
        self.active_steps = 0  # steps advanced while running since the session started (for the ETA)
        self.running = False
        # the machine's load (a SystemSample every 2 s): the latest, a short history, the peaks
        self.system: SystemSample | None = None
        self.system_samples = 0
        self.gpus: dict[int, GpuStat] = {}  # by NVML index
        self.cpu_history = Downsampled(128)  # machine CPU %, x = time
        self.cpu_sum = 0.0
        self.rss_peak = 0
        self.torch_peak: int | None = None

    apply = EventReader.dispatch  # take one event (of any kind) into the digest

    @on(Starting)
    def _starting(self, ev: Starting) -> None:
        self.phase, self.phase_since = ev.phase, ev.time  # a slow import shows its time so far

    @on(RunStarted)
    def _run_started(self, ev: RunStarted) -> None:
        self.phase = "waiting for the first batch"
        self.running = True
        self.epoch = min(ev.start_epoch + 1, ev.epochs)
        self.step = ev.start_step
        self.step_in_epoch = ev.start_step - ev.start_epoch * ev.steps_per_epoch if ev.steps_per_epoch else 0
        self.active_steps = 0
        if ev.resumed_from:  # steps logged after the checkpoint by the session that crashed are done again
            for series in (
                self.train,
                self.train_recent,
                self.val,
                self.lr_history,
                self.grad_norms,
                self.loss_scales,
                self.throughput,
                self.step_times,
            ):
                series.drop_after(ev.start_step)

    @on(TrainSteps)
    def _train_steps(self, ev: TrainSteps) -> None:
        n = len(ev.losses)
        self.phase = None
        self.train.extend(ev.first_step, ev.losses)
        self.train_recent.extend(ev.first_step, ev.losses)
        # the steps advanced, not the values logged: a loop that logs every 10th step advanced 10
        advanced = max(ev.first_step + n - 1 - self.step, 0)
        self.step = ev.first_step + n - 1
        self.epoch = ev.epoch
        self.step_in_epoch = ev.step_in_epoch
        if math.isfinite(ev.lr):  # a tracked loop that does not log its learning rate sends NaN
            self.lr = ev.lr
            self.lr_history.append(self.step, ev.lr)
        self.step_times.append(self.step, ev.time)
        if self.running:
            self.active_steps += advanced
        if ev.grad_norms:
            self.grad_norms.extend(ev.first_step, ev.grad_norms)
        if ev.loss_scale is not None:
            self.loss_scale = ev.loss_scale
            self.loss_scales.append(self.step, ev.loss_scale)
        self.skipped_steps += ev.skipped_steps
        if ev.samples_per_s > 0 and math.isfinite(ev.samples_per_s):
            self.throughput.append(self.step, ev.samples_per_s)
            prev = self.samples_per_s
            self.samples_per_s = ev.samples_per_s if prev is None else 0.7 * prev + 0.3 * ev.samples_per_s
        if ev.tokens_per_s is not None and ev.tokens_per_s > 0 and math.isfinite(ev.tokens_per_s):
            prev = self.tokens_per_s
            self.tokens_per_s = ev.tokens_per_s if prev is None else 0.7 * prev + 0.3 * ev.tokens_per_s

    @on(Validated)
    def _validated(self, ev: Validated) -> None:
        self.epoch = ev.epoch
        val = ev.metrics.get("val_loss")
        if val is not None:
            self.val.append(ev.step, val)

    @on(LRChanged)
    def _lr_changed(self, ev: LRChanged) -> None:
        self.lr = ev.lr
        self.lr_history.append(ev.step, ev.lr)

    @on(SettingChanged)
    def _setting_changed(self, ev: SettingChanged) -> None:
        if ev.key == "optimizer.lr" and isinstance(ev.new, (int, float)):
            self.lr = float(ev.new)
            self.lr_history.append(ev.step, float(ev.new))

    @on(StateChanged)
    def _state(self, ev: StateChanged) -> None:
        self.running = ev.state == "running"

    @on(Finished)
    def _finished(self, ev: Finished) -> None:
        self.running = False
        self.step = ev.step

    @on(SystemSample)
    def _system_sample(self, ev: SystemSample) -> None:
        self.system = ev
        self.system_samples += 1
        self.cpu_history.append(ev.time, ev.cpu_percent)
        self.cpu_sum += ev.cpu_percent
        self.rss_peak = max(self.rss_peak, ev.rss)
        if ev.torch_peak_bytes is not None:
            self.torch_peak = max(self.torch_peak or 0, ev.torch_peak_bytes)
        for g in ev.gpus:
            stat = self.gpus.get(g["index"])
            if stat is None:
                stat = self.gpus[g["index"]] = GpuStat(g["index"], g.get("name") or "")
            if g.get("util") is not None:
                stat.util.append(ev.time, g["util"])
                stat.util_sum += g["util"]
                stat.util_n += 1
            stat.mem_peak = max(stat.mem_peak, g.get("mem_used") or 0)
            stat.mem_total = g.get("mem_total") or stat.mem_total

    # ---- saving ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything, as JSON-ready values (floats may be NaN or infinite: dump with allow_nan)."""
        return {
            **{name: getattr(self, name) for name in _SCALARS},
            "series": {name: getattr(self, name).to_dict() for name in _SERIES},
            "train_recent": self.train_recent.to_dict(),
            "system": self.system.to_dict() if self.system is not None else None,
            "gpus": [
                {
                    "index": g.index,
                    "name": g.name,
                    "util": g.util.to_dict(),
                    "mem_peak": g.mem_peak,
                    "mem_total": g.mem_total,
                    "util_sum": g.util_sum,
                    "util_n": g.util_n,
                }
                for g in self.gpus.values()
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunDigest:
        """The digest ``to_dict`` saved; raises KeyError, TypeError or ValueError if ``d`` is not one."""
        digest = cls()
        for name, kind in _SCALARS.items():
            setattr(digest, name, kind(d.get(name) if name in _ADDED else d[name]))
        for name in _SERIES:
            setattr(digest, name, _series(d["series"][name]))
        digest.train_recent = Recent.from_dict(d["train_recent"])
        system = event_from_dict(d["system"]) if d["system"] is not None else None
        if system is not None and not isinstance(system, SystemSample):
            raise ValueError("not a system sample")
        digest.system = system
        for g in d["gpus"]:
            stat = GpuStat(
                int(g["index"]),
                str(g["name"]),
                _series(g["util"]),
                int(g["mem_peak"]),
                int(g["mem_total"]),
                float(g["util_sum"]),
                int(g["util_n"]),
            )
            digest.gpus[stat.index] = stat
        return digest


@dataclass(frozen=True)
class DigestLoaded(Event, logged=False):
    """Not in the log: a reader's stand-in for the lines a saved digest covers. ``digest`` replaces
    what the events before it added up to; ``skipped`` lines were not read."""

    kind: ClassVar[str] = "digest_loaded"
    digest: RunDigest
    skipped: int = 0


def load_digest(run_dir: Path) -> SavedDigest[RunDigest] | None:
    """The run's saved digest if it is sound and fits its log as it is now; else None (read the whole log)."""
    try:
        data = read_digest_file(run_dir)
        if data is None:
            return None
        return SavedDigest(
            RunDigest.from_dict(data["digest"]),
            data["offset"],
            data["lines"],
            float(data["time"]),
            data["ranges"],
            tuple(data["kinds"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _series(d: dict[str, Any]) -> Downsampled:
    """A saved series, checked: lists of numbers where numbers belong (a damaged file raises ValueError)."""
    columns = [d[key] for key in ("xs", "ys", "mins", "maxs")]
    numbers = [*columns, d["partial"], d["last"] or []]
    if (
        any(type(c) is not list for c in numbers)
        or any(len(c) != len(columns[0]) for c in columns)
        or len(d["partial"]) != 6
    ):
        raise ValueError("a damaged series")
    if not all(type(v) in (float, int) for c in numbers for v in c):
        raise ValueError("a damaged series")
    return Downsampled.from_dict(d)
