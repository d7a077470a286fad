"""The monitor's view model: everything the screen shows, fed by events, testable without Textual.

:meth:`MonitorModel.apply` takes the engine's events (read back from ``events.jsonl``) in order;
the widgets only read from the model. Time-dependent values (ETA, elapsed) take ``now``.
"""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass, field, replace

from tuiloop.engine import sentences
from tuiloop.engine.best import higher_is_better
from tuiloop.engine.events import (
    CheckpointSaved,
    EarlyStopUpdate,
    Event,
    EventReader,
    Failed,
    Finished,
    LRChanged,
    Message,
    RunStarted,
    SettingChanged,
    Stalled,
    StateChanged,
    Tested,
    TrainSteps,
    Validated,
    on,
)
from tuiloop.engine.exits import exit_status
from tuiloop.rundir.digest import DigestLoaded, RunDigest
from tuiloop.rundir.series import Downsampled

ENDED = ("completed", "early_stopped", "stopped", "suspended", "failed", "forced", "crashed")
PLOTTED = frozenset(
    {RunStarted, TrainSteps, Validated, LRChanged, SettingChanged, Finished, DigestLoaded}
)  # what the plots draw
LOG_LINES = 10_000  # the log pane scrolls back over the whole run


@dataclass
class LogEntry:
    """One line of the log; ``level`` is info, save, best, warning, error, success or dim."""

    time: float
    level: str
    text: str
    key: str = ""  # consecutive entries with the same non-empty key collapse into one
    repeat: int = 1


@dataclass
class MetricStat:
    """The last and best value of one validation metric, and its history per validation."""

    name: str
    higher_is_better: bool
    last: float | None = None
    best: float | None = None
    best_epoch: int | None = None
    history: Downsampled = field(default_factory=lambda: Downsampled(128))

    def update(self, value: float, epoch: int) -> None:
        self.last = value
        self.history.append(epoch, value)
        if not math.isfinite(value):
            return
        if self.best is None or (value > self.best if self.higher_is_better else value < self.best):
            self.best, self.best_epoch = value, epoch


def _digested(name: str) -> property:
    """A field the model keeps in its :class:`RunDigest` (the series, the step, the machine's load)."""
    return property(lambda self: getattr(self.digest, name), lambda self, value: setattr(self.digest, name, value))


class MonitorModel(EventReader):
    """What the monitor shows about one run, rebuilt from its events.

    Its series and progress live in ``self.digest`` (:class:`RunDigest`), which the training
    process keeps too and saves: a :class:`DigestLoaded` replaces it with the saved one.
    """

    phase = _digested("phase")  # what a starting run is doing (importing torch, loading the data, ...)
    phase_since = _digested("phase_since")
    epoch = _digested("epoch")  # the epoch in progress, or the last one (from 1)
    step_in_epoch = _digested("step_in_epoch")
    step = _digested("step")  # global optimizer steps done
    lr = _digested("lr")
    samples_per_s = _digested("samples_per_s")
    tokens_per_s = _digested("tokens_per_s")
    train = _digested("train")  # x = global step
    train_recent = _digested("train_recent")  # the last steps, one by one
    val = _digested("val")  # monitored-loss curve: val_loss, x = global step
    lr_history = _digested("lr_history")
    # training health, under the loss plot
    grad_norms = _digested("grad_norms")  # total gradient norm before clipping, x = step
    throughput = _digested("throughput")  # samples/s per flush, x = step
    loss_scale = _digested("loss_scale")  # 16-mixed's grad scaler
    loss_scales = _digested("loss_scales")  # its history, x = step
    skipped_steps = _digested("skipped_steps")
    step_times = _digested("step_times")  # wall time of the steps (x = step), for a time axis
    # the machine's load (SystemSample every 2 s): the latest, a short history, the peaks
    system = _digested("system")
    system_samples = _digested("system_samples")
    gpus = _digested("gpus")  # GpuStat by NVML index
    cpu_history = _digested("cpu_history")  # machine CPU %, x = time
    cpu_sum = _digested("cpu_sum")
    rss_peak = _digested("rss_peak")
    torch_peak = _digested("torch_peak")

    def __init__(self, run_dir: str = "", resolution: int = 512, expect_session: str | None = None) -> None:
        self.run_dir = run_dir
        # The start of the run we follow. A resumed run's log starts with its earlier sessions;
        # their ending must not end this view before the new one announces itself.
        self.expect_session = expect_session
        self.started: RunStarted | None = None
        self.state, self.state_reason = "starting", ""
        self.digest = RunDigest(resolution)
        self.epochs_done = 0
        self.epoch_rows: list[Validated] = []  # every validation, for the epoch table
        self.stop_after_epoch = False
        self.metrics: dict[str, MetricStat] = {}
        self.best_value: float | None = None  # the monitored metric (checkpoint monitor)
        self.best_epoch: int | None = None
        self.best_point: tuple[float, float] | None = None  # (step, value) of the monitored metric at its best check
        self.early: EarlyStopUpdate | None = None
        self.failure: Failed | None = None
        self.last_saved: CheckpointSaved | None = None  # the newest last.pt
        self.last_error: str | None = None
        self.finished: Finished | None = None
        self.tested: Tested | None = None  # the test split, evaluated when the run ended
        self.exit_code: int | None = None  # of the training process, when it is gone
        self.log: deque[LogEntry] = deque(maxlen=LOG_LINES)
        self.log_count = 0  # entries ever logged: the newest is entry log_count - 1
        self.log_rev = 0  # bumped on every change of the log (a new entry, or the last one changed)
        self.gone_status = "crashed"  # how a run that vanished without a summary is shown
        self.version = 0  # bumped on every change, so views can skip identical redraws
        self.plot_version = 0  # bumped by the events the plots draw (not by a machine sample every 2 s)
        self.events_seen = 0
        # ETA: time spent running (pauses excluded) and the steps done in it (digest.active_steps), since the start
        self._active_s = 0.0
        self._t_last: float | None = None
        self.last_event_time: float | None = None
        self.first_event_time: float | None = None  # the run's first event: its wall clock starts here
        self.train_time = 0.0  # seconds spent training (running), all sessions, pauses and start-up left out

    # ---- feeding ----------------------------------------------------------------------------
    def apply_all(self, events: list[Event]) -> None:
        for ev in events:
            self.apply(ev)

    def apply(self, ev: Event) -> None:
        """Take one event into the model."""
        self.version += 1
        if type(ev) in PLOTTED:
            self.plot_version += 1
        self.events_seen += 1
        self._clock(ev)
        self.digest.apply(ev)
        self.dispatch(ev)
        self.last_event_time = ev.time

    def _clock(self, ev: Event) -> None:
        if self._t_last is not None and self.state == "running":
            dt = max(ev.time - self._t_last, 0.0)
            self._active_s += dt
            self.train_time += dt
        self._t_last = ev.time
        if self.first_event_time is None:
            self.first_event_time = ev.time

    @on(DigestLoaded)
    def _digest_loaded(self, ev: DigestLoaded) -> None:
        # the digest the training process saved at this point of the log: it holds the lines
        # that were not read, and replaces what the events read before it made of the digest.
        # Its time is the last covered line's and no state changes in the lines skipped, so the
        # clock above sums the same running time as a full read (the ETA, the training time).
        self.digest = ev.digest
        self.events_seen += ev.skipped - 1  # the lines it stands for, not itself

    @on(RunStarted)
    def _run_started(self, ev: RunStarted) -> None:
        self.started = ev
        self.run_dir = ev.run_dir or self.run_dir
        self.state, self.state_reason = "running", ""
        self.finished = self.tested = None
        self.failure = None
        self.exit_code = None
        self.epochs_done = ev.start_epoch
        self._active_s = 0.0
        self.stop_after_epoch = False
        self.best_value = self.best_value if ev.resumed_from else None
        for name in ev.metrics:
            self._metric(name)
        if ev.resumed_from:
            # steps logged after the checkpoint by the session that crashed are done again
            # (the digest drops them from the series)
            self.epoch_rows = [row for row in self.epoch_rows if row.step <= ev.start_step]
        self._log(ev.time, "info", sentences.started(ev))

    @on(Validated)
    def _validated(self, ev: Validated) -> None:
        self.epochs_done = ev.epoch
        self.epoch_rows.append(ev)
        for name, value in ev.metrics.items():
            self._metric(name).update(value, ev.epoch)
        monitor = self.started.monitor if self.started else None
        if ev.is_best and monitor and monitor in ev.metrics:
            self.best_value, self.best_epoch = ev.metrics[monitor], ev.epoch
            if math.isfinite(self.best_value):
                self.best_point = (ev.step, self.best_value)

    @on(LRChanged)
    def _lr_changed(self, ev: LRChanged) -> None:
        # a plateau cut or a warm restart is news; the small steps of a smooth schedule are not
        if ev.previous > 0 and ev.lr > 0 and abs(math.log(ev.lr / ev.previous)) >= math.log(1.5):
            self._log(ev.time, "info", sentences.lr_changed(ev), key="lr")

    @on(SettingChanged)
    def _setting_changed(self, ev: SettingChanged) -> None:
        if ev.key == "stop_after_epoch":
            self.stop_after_epoch = bool(ev.new)
        elif ev.key == "run.epochs" and self.started is not None and isinstance(ev.new, int):  # ctl set
            self.started = replace(self.started, epochs=ev.new)
        self._log(ev.time, "warning", sentences.setting_changed(ev))

    @on(EarlyStopUpdate)
    def _early_stop(self, ev: EarlyStopUpdate) -> None:
        self.early = ev
        if ev.triggered:
            self._log(ev.time, "warning", sentences.early_stop_triggered(ev))

    @on(CheckpointSaved)
    def _checkpoint(self, ev: CheckpointSaved) -> None:
        self.last_saved = ev if ev.tag == "last" else self.last_saved
        prev = self.log[-1] if self.log else None
        if ev.tag == "last" and prev is not None and prev.key.startswith(f"ckpt@{ev.step}:"):
            prev.text += sentences.ALSO_LAST  # the same moment's best/periodic save: one line for both
            self.log_rev += 1
            return
        level = {"best": "best", "last": "dim"}.get(ev.tag, "save")
        # repeated last.pt saves collapse into one line; other saves each keep their own
        key = "ckpt-last" if ev.tag == "last" else f"ckpt@{ev.step}:{ev.tag}"
        self._log(ev.time, level, sentences.checkpoint_saved(ev), key=key)

    @on(StateChanged, Stalled)
    def _state(self, ev: StateChanged | Stalled) -> None:
        if isinstance(ev, Stalled):  # the sentence ends with the user's line it waits in
            self.state, self.state_reason = "stalled", sentences.stalled(ev)
            return self._log(ev.time, "error", "stalled: " + self.state_reason)
        self.state, self.state_reason = ev.state, ev.reason
        self._log(ev.time, "warning" if ev.state == "stopping" else "info", sentences.state_changed(ev))

    @on(Message)
    def _message(self, ev: Message) -> None:
        self._log(ev.time, ev.level if ev.level in ("warning", "error") else "info", ev.text)
        if ev.level == "error":
            self.last_error = ev.text  # e.g. a NaN loss, which ends the run without a Failed event

    def _earlier_session(self) -> bool:
        """True while the events read are those of a session before the process we follow."""
        return bool(self.expect_session) and self.started is not None and self.started.session != self.expect_session

    @on(Failed)
    def _failed(self, ev: Failed) -> None:
        if self._earlier_session() and ev.where != "setup":  # a setup failure is always the new process's
            self._log(ev.time, "error", f"an earlier session failed: {sentences.failed(ev)}")
            return
        self.failure = ev
        self._log(ev.time, "error", sentences.failed(ev))

    @on(Tested)
    def _tested(self, ev: Tested) -> None:
        self.tested = ev
        self._log(ev.time, "success", sentences.tested(ev))

    @on(Finished)
    def _finished(self, ev: Finished) -> None:
        if self._earlier_session() and not (self.failure is not None and self.failure.where == "setup"):
            self.state, self.state_reason = "starting", "resuming"
            self._log(ev.time, "dim", f"an earlier session ended: {sentences.ended(ev)}")
            return
        self.finished = ev
        self.state, self.state_reason = ev.status, ev.reason
        self.epochs_done = ev.epochs_done
        level = "error" if ev.status in ("failed", "forced") else "success"
        self._log(ev.time, level, f"finished: {sentences.finished(ev)}")

    # ---- outside the event log --------------------------------------------------------------
    def process_gone(self, exit_code: int | None, now: float, disk: str = "") -> None:
        """The training process is gone; without a Finished event the run crashed or was killed.
        ``disk``: what is wrong with the run directory's file system ('its file system is full')."""
        self.exit_code = exit_code
        if self.finished is None:
            self.version += 1
            self.plot_version += 1  # the empty plot says why
            self.state = self.gone_status
            code = f" with status {exit_code}" if exit_code is not None else ""
            self.state_reason = f"the training process exited{code} without finishing"
            if disk:  # then neither its log nor its output.log could say why
                last = self.last_saved
                safe = f"the last good checkpoint is epoch {last.epoch} ({last.path})" if last else "no last.pt"
                self.state_reason += f": the run directory cannot be written ({disk}); {safe}"
            elif self.run_dir and not os.path.isdir(self.run_dir):
                self.state_reason += ": its run directory was deleted while it ran"
            self._log(now, "error", self.state_reason + ("" if disk else " (see output.log in the run directory)"))

    def note(self, now: float, level: str, text: str) -> None:
        """A line from the monitor itself (a command sent, a command refused)."""
        self.version += 1
        self._log(now, level, text)

    def _log(self, t: float, level: str, text: str, key: str = "") -> None:
        self.log_rev += 1
        if key and self.log and self.log[-1].key == key:
            prev = self.log[-1]
            self.log[-1] = LogEntry(t, level, text, key, prev.repeat + 1)
            return
        self.log.append(LogEntry(t, level, text, key))
        self.log_count += 1

    def _metric(self, name: str) -> MetricStat:
        stat = self.metrics.get(name)
        if stat is None:
            s = self.started  # the monitor's mode, else the metric's own word (torchmetrics' higher_is_better)
            mode = (s.mode if name == s.monitor else s.modes.get(name)) if s is not None else None
            stat = self.metrics[name] = MetricStat(name, mode == "max" if mode else higher_is_better(name))
        return stat

    # ---- derived values -----------------------------------------------------------------------
    @property
    def over(self) -> bool:
        """True once the run has ended (or its process is gone)."""
        return self.state in ENDED

    @property
    def run_name(self) -> str:
        """The spec's run name; before the run announced itself, the run directory's name."""
        if self.started is not None:
            return self.started.run_name
        return os.path.basename(self.run_dir.rstrip("/")) if self.run_dir else ""

    @property
    def total_steps(self) -> int | None:
        """The planned steps: as the loop said them, else epochs x steps per epoch; None if unknown."""
        if self.started is not None and self.started.max_steps:
            return self.started.max_steps
        if self.started is None or not self.started.steps_per_epoch or not self.started.epochs:
            return None
        return self.started.epochs * self.started.steps_per_epoch

    def seconds_per_step(self) -> float | None:
        """Wall time per step while running, validation and checkpoints included."""
        steps = self.digest.active_steps
        if steps < 1 or self._active_s <= 0:
            return None
        return self._active_s / steps

    def eta(self, now: float) -> float | None:
        """Seconds left if every epoch runs (early stopping may end it sooner); None if unknown."""
        total, per_step = self.total_steps, self.seconds_per_step()
        if self.over or total is None or per_step is None:
            return None
        left = max(total - self.step, 0) * per_step
        if self.state == "running" and self.last_event_time is not None:
            left -= max(now - self.last_event_time, 0.0)
        return max(left, 0.0)

    def wall_time(self, now: float) -> float | None:
        """Since the run's first event (start-up included) until now, or until it ended."""
        if self.first_event_time is None:
            return None
        end = self.finished.time if self.finished is not None else self.last_event_time if self.over else now
        return max((end or now) - self.first_event_time, 0.0)

    def training_time(self, now: float) -> float:
        """Time spent training: pauses, start-up and the time between sessions left out."""
        live = now - self._t_last if self.state == "running" and self._t_last is not None else 0.0
        return self.train_time + max(live, 0.0)

    def exit_status(self) -> int:
        """The exit status of the run as it stands (:func:`tuiloop.engine.exits.exit_status`)."""
        return exit_status(
            self.state, self.state == "failed" and self.failure is not None and self.failure.where == "setup"
        )

    def summary_line(self) -> str:
        """One line on how the run stands, printed after the monitor closes."""
        name = self.run_name or "the run"
        if self.finished is not None:
            return f"{name}: {sentences.finished(self.finished)}"
        if self.state == "crashed":
            return f"{name}: crashed: {self.state_reason}"
        return f"{name}: still {self.state} at epoch {self.epoch}, step {self.step}"
