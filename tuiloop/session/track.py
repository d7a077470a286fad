"""``tuiloop.track``: a run directory written from your own training loop, watched and steered like any other.

The loop stays yours; :func:`track` opens (or continues) a run directory, takes its lock, serves
its control socket, and the :class:`Run` it returns turns a few calls into the same events a spec
run writes, so ``tuiloop attach RUN_DIR`` watches and steers it live and ``tuiloop show`` /
``tuiloop ls`` read it afterwards::

    with tuiloop.track("runs/my-run", config=cfg, epochs=10, steps_per_epoch=len(loader)) as run:
        for epoch in range(1, 11):
            for batch in loader:
                ...
                step += 1
                run.log(step, train_loss=loss.item(), lr=opt.param_groups[0]["lr"])
                run.wait_if_paused()
                if run.should_stop():
                    break
                if run.save_requested():
                    torch.save(model.state_dict(), path)
                    run.checkpoint(path)
            run.validated(epoch, val_loss=val_loss)

:meth:`Run.log` only appends to a list: per-step losses are written as one ``TrainSteps`` event a
few times a second. Commands from the socket arrive in a :class:`Commands` mailbox, which the
loop's own thread reads in ``log``, ``should_stop``, ``wait_if_paused`` and ``save_requested``.
torch is imported only to read losses given as tensors, and for the versions in run.json.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import traceback
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any

from tuiloop.engine import fmt
from tuiloop.engine.commands import Commands, obeyed_by
from tuiloop.engine.distributed import SINGLE
from tuiloop.engine.events import (
    CheckpointSaved,
    Failed,
    Finished,
    Message,
    RunStarted,
    StateChanged,
    TrainSteps,
    Validated,
)
from tuiloop.engine.monitor import MetricMonitor
from tuiloop.engine.origin import describe_where, format_frames, user_frames
from tuiloop.rundir.control import ControlServer
from tuiloop.rundir.eventlog import EventLog
from tuiloop.rundir.layout import CHECKPOINTS, RUN_INFO, SUMMARY, is_run_dir, read_json, update_info, who
from tuiloop.rundir.lock import RunIsLive, RunLock
from tuiloop.session.run import SESSION_ENV, _force, _record_setup_failure, summarize, versions
from tuiloop.session.signals import Signals
from tuiloop.session.system import SystemSampler, interval_from_env

DEVICE = "user loop"  # what the monitor's start line says the run trains on
STATUSES = ("completed", "early_stopped", "stopped", "failed")
PAUSED_POLL_S = 0.5
_clock = time.perf_counter


def track(
    run_dir: str | os.PathLike[str],
    config: Any = None,
    name: str | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    monitor: str = "val_loss",
    mode: str = "min",
    handle_signals: bool = False,
    log_interval: float = 0.25,
) -> Run:
    """Open ``run_dir`` as the run directory of your own loop and return its :class:`Run`.

    * ``run_dir``: the exact directory (made owner-only, with ``checkpoints/``, if missing). One
      that holds an earlier run is continued: its log appended. A live one (its lock held by
      another process) raises RuntimeError.
    * ``config``: your settings (a dict, a dataclass or an argparse Namespace), kept in run.json.
    * ``name``: the run's name (default: the directory's name).
    * ``epochs``, ``steps_per_epoch``: the plan, for the monitor's progress bar and ETA; a run
      that validated ``epochs`` epochs ends as completed.
    * ``monitor``, ``mode``: the metric of :meth:`Run.validated` whose best is tracked.
    * ``handle_signals``: Ctrl+C asks the loop to stop (:meth:`Run.should_stop`), a second one
      forces the process to exit; without it, Ctrl+C raises KeyboardInterrupt as usual (a with
      block then ends the run as stopped).
    * ``log_interval``: seconds between writes of the buffered per-step losses.
    """
    return Run(Path(run_dir), config, name, epochs, steps_per_epoch, monitor, mode, handle_signals, log_interval)


# What a tracked loop obeys (the monitor offers only these keys); force needs no loop.
OBEYED = obeyed_by("track")


class Run:
    """A run directory fed by your loop; made by :func:`track`, ended by :meth:`close` (or a with block).

    Steps are global optimizer steps counted from 1 (they keep growing across epochs); epochs are
    counted from 1, as everywhere in tuiloop.
    """

    def __init__(
        self,
        run_dir: Path,
        config: Any,
        name: str | None,
        epochs: int | None,
        steps_per_epoch: int | None,
        monitor: str,
        mode: str,
        handle_signals: bool,
        log_interval: float,
    ) -> None:
        self.best = MetricMonitor(monitor, mode)  # mode and config are checked before anything is written
        config_data = _config_data(config)
        self.run_dir = run_dir.resolve()
        self.name = name or self.run_dir.name
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.monitor = monitor
        self.log_interval = log_interval
        self.commands = Commands()  # filled by the control socket's thread (and signals); read by the loop
        self.epochs_done = 0  # the last epoch given to validated()
        self.last_metrics: dict[str, float] = {}
        self.finished: Finished | None = None
        # per-step values since the last write: the open run of consecutive steps, and closed ones
        self._losses: list[Any] = []
        self._first = 0  # the step of _losses[0]
        self._next_step: int | None = None  # the step that continues the open run
        self._segments: list[tuple[int, list[Any], int, float]] = []  # (first step, losses, step in epoch, lr)
        self._lr = math.nan  # unknown until log() is given one
        self._samples = 0
        self._due = 0.0  # the first step is written at once, then every log_interval
        self._epoch_start = 0  # the last step of the epochs before this one
        self._epoch_loss = [0.0, 0]  # sum and count of this epoch's losses (train_loss for validated)
        self._extra: dict[str, list[float]] = {}  # this epoch's other per-step values: name -> [sum, count]
        # steering (touched by the loop's thread only)
        self._paused = False
        self._stopping = False
        self._stop_reason = ""
        self._save_asked = False
        self._saving = False  # save_requested() said yes and no checkpoint() followed yet
        self._warned: set[str] = set()
        self._closed = False
        self._server: ControlServer | None = None
        self._system: SystemSampler | None = None  # the machine's load into the log every 2 s, from a thread
        self._signals = Signals(self._request_stop, self._force)
        self._open(config_data, name, handle_signals, mode)

    # ---- opening and closing -------------------------------------------------------------------
    def _open(self, config: dict[str, Any], name: str | None, handle_signals: bool, mode: str) -> None:
        run_dir = self.run_dir
        fresh = not is_run_dir(run_dir)
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (run_dir / CHECKPOINTS).mkdir(mode=0o700, exist_ok=True)
        try:
            self._lock = RunLock.acquire(run_dir)
        except RunIsLive:
            raise RuntimeError(
                f"{run_dir} is a live run (another process trains in it); watch it with tuiloop attach {run_dir}, or pass another run directory"
            ) from None
        self._started = time.time()
        self._t0 = self._last_write = _clock()
        try:
            self._emit = EventLog(run_dir)
        except BaseException:
            self._lock.release()
            raise
        try:
            self.session = os.environ.get(SESSION_ENV) or uuid.uuid4().hex[:12]
            info = self._write_info(fresh, name, config)
            self.name = info["name"]
            self._info_started = info.get("started", self._started)
            self.commands.on_force = self._force
            self._server = ControlServer(
                run_dir, self.commands, warn=lambda text: self._emit(Message("warning", text))
            ).start()
            if handle_signals:
                self._signals.install()
            self._announce(mode, config)
            self._system = SystemSampler(self._emit, interval_from_env()).start()
        except Exception as e:  # the socket, the signals, run.json: say so in the run directory, then raise
            self._closed = True
            _record_setup_failure(run_dir, [self._emit], e, self._started)
            self._release()
            raise

    def _write_info(self, fresh: bool, name: str | None, config: dict[str, Any]) -> dict[str, Any]:
        """run.json: who runs it and the config; a continued run keeps its start and lists this one."""
        fields: dict[str, Any] = {
            "tracked": True,
            "config": config,
            "pid": os.getpid(),
            "session": self.session,
            "versions": versions(),
            **who(),
        }
        if fresh:
            fields.update(name=self.name, started=self._started)
        else:
            info = read_json(self.run_dir / RUN_INFO) or {}
            fields.update(name=name or info.get("name") or self.name, resumes=[*info.get("resumes", []), self._started])
            (self.run_dir / SUMMARY).unlink(
                missing_ok=True
            )  # live again: a crash from here must not read as the old ending
        return update_info(self.run_dir, **fields)

    def _announce(self, mode: str, config: dict[str, Any]) -> None:
        self._emit(
            RunStarted(
                run_name=self.name,
                run_dir=str(self.run_dir),
                device=DEVICE,
                device_name=DEVICE,
                epochs=self.epochs or 0,
                steps_per_epoch=self.steps_per_epoch,
                batch_size=None,
                train_size=None,
                val_size=None,
                problem="other",
                metrics=list(dict.fromkeys(["train_loss", self.monitor])),
                monitor=self.monitor,
                mode=mode,
                patience=None,
                num_params=0,
                pid=os.getpid(),
                session=self.session,
                commands=list(OBEYED),
            )
        )
        if config:
            text = ", ".join(f"{k}={v!r}" for k, v in config.items())
            self._emit(Message("info", f"config: {text if len(text) <= 300 else text[:297] + '...'}"))

    def close(self, status: str | None = None, reason: str | None = None) -> Finished:
        """End the run: write what is buffered, the Finished event and summary.json; release the
        socket and the lock. Closing again returns the same Finished.

        Without ``status``: completed if the planned epochs were validated or no stop was asked,
        else stopped. ``status`` may say otherwise: completed, early_stopped, stopped or failed.
        """
        if self.finished is not None or self._closed:
            return self.finished  # type: ignore[return-value]
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        self._closed = True
        try:
            self._flush()
            status, reason = self._outcome(status, reason)
            finished = Finished(
                status,
                reason,
                self.epochs_done,
                self.step,
                self.best.best,
                self.best.best_epoch,
                self.monitor,
                _clock() - self._t0,
            )
            self._stop_sampling()  # before Finished: it stays the log's last line
            self._emit(finished)
            summarize(self.run_dir, finished, self.last_metrics, self._info_started, self.epochs)
            self.finished = finished
            return finished
        finally:
            self._release()

    def _outcome(self, status: str | None, reason: str | None) -> tuple[str, str]:
        planned = f"{fmt.plural(self.epochs, 'epoch')} done" if self.epochs else "the loop ended"
        if status is not None:
            default = {
                "stopped": self._stop_reason or "stopped by the loop",
                "failed": "failed in the loop",
                "early_stopped": "stopped early by the loop",
            }.get(status, planned)
            return status, reason or default
        if self.epochs and self.epochs_done >= self.epochs:
            return "completed", reason or planned
        if self._stopping:
            return "stopped", reason or self._stop_reason
        return "completed", reason or (
            f"the loop ended after {self.epochs_done} of {self.epochs} epochs" if self.epochs else planned
        )

    def fail(self, error: BaseException) -> Finished:
        """End the run as failed by ``error``: its message, your line and the traceback go to the log."""
        if self._closed:
            return self.finished  # type: ignore[return-value]
        where = describe_where(error, "the loop", self.epochs_done + 1, self.step)
        self._flush()
        self._emit(
            Failed(
                f"{type(error).__name__}: {error}",
                where,
                "".join(traceback.format_exception(type(error), error, error.__traceback__)),
                format_frames(user_frames(error)),
            )
        )
        return self.close("failed", f"{type(error).__name__} in the loop")

    def _stop_sampling(self) -> None:
        if self._system is not None:
            self._system.stop()

    def _release(self) -> None:
        self._stop_sampling()
        if self._server is not None:
            self._server.close()
        self._signals.restore()
        self._emit.close()
        self._lock.release()

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Leaving the block: an exception ends the run as failed (KeyboardInterrupt: stopped) and goes on up."""
        if isinstance(exc, Exception):
            self.fail(exc)
        elif isinstance(exc, KeyboardInterrupt):
            self._stop_reason = self._stop_reason or "interrupted (KeyboardInterrupt)"
            self.close("stopped")
        else:
            self.close()

    # ---- what the loop reports ----------------------------------------------------------------
    def log(self, step: int, train_loss: Any, lr: float | None = None, samples: int = 0, **extra: float) -> None:
        """One optimizer step's training loss (a float, or a tensor read later in one transfer).

        ``lr``: the learning rate now; ``samples``: samples in this step (for samples/s); other
        keywords (``train_acc=...``) are averaged over the epoch and reported with its metrics.
        Steps may skip numbers (logging every 10th step). Costs well under a microsecond: the
        values wait in a list that is written a few times a second.
        """
        if step != self._next_step:
            self._jump(step)
        self._next_step = step + 1
        self._losses.append(train_loss if type(train_loss) is float else _scalar(train_loss))
        if lr is not None:
            self._lr = lr
        if samples:
            self._samples += samples
        if extra:
            self._add_extra(extra)
        if self.commands.pending:
            self._poll()
        if _clock() >= self._due:
            self._flush()

    def validated(self, epoch: int, **metrics: float) -> bool:
        """Epoch ``epoch`` (from 1) is done, with these metrics (``val_loss=...``); True if it is the
        best by ``monitor``. The epoch's mean train_loss (and of other logged values) is added
        unless given."""
        self._flush()
        values = {k: s / n for k, (s, n) in self._extra.items()}
        if self._epoch_loss[1]:
            values["train_loss"] = self._epoch_loss[0] / self._epoch_loss[1]
        values.update({k: float(v) for k, v in metrics.items()})
        value = values.get(self.monitor)
        if value is None:
            self._warn(
                "monitor",
                f"validated() was not given {self.monitor}, the monitored metric: pass it, or track(..., monitor=...) one it gets ({', '.join(values) or 'none'})",
            )
        is_best = value is not None and self.best.update(value, epoch)
        self.epochs_done, self.last_metrics = epoch, values
        self._epoch_start = self.step
        self._epoch_loss, self._extra = [0.0, 0], {}
        self._emit(Validated(epoch, self.step, values, is_best, 0.0))
        return is_best

    def checkpoint(self, path: str | os.PathLike[str], tag: str | None = None) -> None:
        """A checkpoint file the loop has written (shown in the monitor's log). ``tag``: best,
        last, periodic or manual; by default manual right after :meth:`save_requested` said yes, else last."""
        self._flush()
        if tag is None:
            tag = "manual" if self._saving else "last"
        self._saving = False
        full = Path(path).resolve()
        shown = str(full.relative_to(self.run_dir)) if full.is_relative_to(self.run_dir) else str(full)
        self._emit(
            CheckpointSaved(tag, shown, self.epochs_done, self.step, self.last_metrics.get(self.monitor), self.monitor)
        )

    def message(self, text: str, level: str = "info") -> None:
        """A line for the monitor's log (``level``: info, warning or error)."""
        self._emit(Message(level, text))

    @property
    def step(self) -> int:
        """The last step logged (0 before the first)."""
        return self._next_step - 1 if self._next_step is not None else 0

    # ---- steering -------------------------------------------------------------------------------
    def should_stop(self) -> bool:
        """True once a stop was asked (``q`` in a monitor, ``tuiloop`` commands, Ctrl+C with handle_signals)."""
        if self.commands.pending:
            self._poll()
        return self._stopping

    def save_requested(self) -> bool:
        """True once after each ``s`` (presses before the loop looks count once): save now, then call :meth:`checkpoint`."""
        if self.commands.pending:
            self._poll()
        if not self._save_asked:
            return False
        self._save_asked, self._saving = False, True
        return True

    def wait_if_paused(self) -> bool:
        """Block while the run is paused (``p``), until it is resumed or stopped; True if it waited.

        A save asked while paused is answered by :meth:`save_requested` after the pause.
        """
        if self.commands.pending:
            self._poll()
        if not self._paused or self._stopping:
            return False
        self._flush()
        self._emit(StateChanged("paused", step=self.step))
        while self._paused and not self._stopping:
            for cmd in self.commands.wait(PAUSED_POLL_S):
                self._apply(cmd)
        if not self._stopping:
            self._last_write, self._samples = _clock(), 0  # samples/s counts running time only
            self._emit(StateChanged("running", step=self.step))
        return True

    def _poll(self) -> None:
        for cmd in self.commands.take():
            self._apply(cmd)

    def _apply(self, cmd: str) -> None:
        if cmd == "toggle_pause":
            cmd = "resume" if self._paused else "pause"
        if cmd in ("pause", "resume"):
            self._paused = cmd == "pause"
        elif cmd == "save":
            self._save_asked = True
        elif cmd == "stop":
            self._stop()
        else:
            self._warn(cmd, f"{cmd!r} does nothing in a loop tracked with tuiloop.track: it obeys pause, save and stop")

    def _stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._stop_reason = self._stop_reason or "stopped by request"
        self._flush()
        self._emit(StateChanged("stopping", self._stop_reason, step=self.step))

    def _request_stop(self, reason: str) -> None:
        """A signal's stop (from the signal thread): the loop sees it through the mailbox."""
        self._stop_reason = self._stop_reason or reason
        self.commands.send("stop")

    def _force(self) -> None:
        """A second Ctrl+C or the force command: record the forced end, then exit at once (status 130)."""
        view = SimpleNamespace(
            epoch=self.epochs_done,
            step=self.step,
            best=self.best,
            opt=SimpleNamespace(monitor=self.monitor, epochs=self.epochs),
            last_metrics=self.last_metrics,
            ranks=SINGLE,
        )
        _force(self.run_dir, view, self._emit, self._started)

    # ---- writing the steps --------------------------------------------------------------------
    def _jump(self, step: int) -> None:
        """``step`` does not continue the open run of steps: close it, start another."""
        if self._losses:
            self._cut()
        if self._next_step is not None and step < self._next_step:
            self._warn(
                "steps",
                f"step {step} logged after step {self._next_step - 1}: log the global step, which keeps growing across epochs, so the plot reads right",
            )
        self._first = step

    def _cut(self) -> None:
        """Close the open run of consecutive steps (written with the next flush)."""
        last = self._first + len(self._losses) - 1
        self._segments.append((self._first, self._losses, last - self._epoch_start, self._lr))
        self._losses = []
        self._first = last + 1

    def _flush(self) -> None:
        """Write the buffered steps: one TrainSteps event per run of consecutive steps."""
        now = _clock()
        self._due = now + self.log_interval
        if self._losses:
            self._cut()
        if not self._segments:
            return
        segments, self._segments = self._segments, []
        rate = self._samples / max(now - self._last_write, 1e-9)
        self._samples, self._last_write = 0, now
        epoch = self.epochs_done + 1
        for first, raw, in_epoch, lr in segments:
            losses = _floats(raw)
            self._epoch_loss[0] += sum(losses)
            self._epoch_loss[1] += len(losses)
            self._emit(TrainSteps(epoch, first, losses, in_epoch, lr, rate))
            if "loss" not in self._warned and not all(map(math.isfinite, losses)):
                bad = next(i for i, v in enumerate(losses) if not math.isfinite(v))
                self._warn("loss", f"the training loss is {losses[bad]} at step {first + bad}")

    def _add_extra(self, extra: dict[str, Any]) -> None:
        for key, value in extra.items():
            total = self._extra.setdefault(key, [0.0, 0])
            total[0] += float(value)
            total[1] += 1

    def _warn(self, key: str, text: str) -> None:
        """A warning in the run's log, once per ``key``."""
        if key not in self._warned:
            self._warned.add(key)
            self._emit(Message("warning", text))


def _scalar(value: Any) -> Any:
    """A loss as log() keeps it: a tensor stays on its device (detached), anything else becomes a float."""
    if hasattr(value, "detach"):
        if value.numel() != 1:
            raise ValueError(f"train_loss must be a single number, not a tensor of shape {tuple(value.shape)}")
        return value.detach()
    return float(value)


def _floats(values: list[Any]) -> list[float]:
    """The buffered losses as floats; tensors are read in one transfer (one device sync)."""
    if all(type(v) is float for v in values):
        return values
    tensors = [v for v in values if type(v) is not float]
    try:
        import torch

        read = iter(torch.stack(tensors).float().reshape(-1).tolist())
    except RuntimeError:  # tensors of several shapes (() and (1,)) or on several devices
        read = iter([float(t) for t in tensors])
    return [v if type(v) is float else next(read) for v in values]


def _config_data(config: Any) -> dict[str, Any]:
    """The config as JSON data for run.json (values JSON cannot hold are kept as text)."""
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    elif not isinstance(config, Mapping) and hasattr(config, "__dict__"):
        config = vars(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, a dataclass or a namespace, not {type(config).__name__}")
    return json.loads(json.dumps({str(k): v for k, v in config.items()}, default=str, allow_nan=True))
