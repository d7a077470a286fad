"""``tuiloop.track``: a run directory written from your own training loop, watched and steered like any other.

The loop stays yours; :func:`track` opens (or continues) a run directory, takes its lock, serves
its control socket, and the :class:`Run` it returns turns a few calls into the same events a spec
run writes, so ``tuiloop attach RUN_DIR`` watches and steers it live and ``tuiloop show`` /
``tuiloop ls`` read it afterwards::

    with tuiloop.track(config=cfg, epochs=10, steps_per_epoch=len(loader), model=model) as run:
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

import os
import time
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

from tuiloop.engine import fmt
from tuiloop.engine.best import MetricMonitor
from tuiloop.engine.commands import obeyed_by
from tuiloop.engine.events import CheckpointSaved, Failed, Finished, Message, RunStarted, StateChanged, Validated
from tuiloop.engine.origin import describe_where, format_frames, user_frames
from tuiloop.runner.life import Standing
from tuiloop.runner.obeying import Obeying
from tuiloop.runner.opening import open_run
from tuiloop.runner.settings import config_data
from tuiloop.runner.steps import StepWriter

DEVICE = "user loop"  # what the monitor's start line says the run trains on
STATUSES = ("completed", "early_stopped", "stopped", "failed")
_clock = time.perf_counter


def track(
    run_dir: str | os.PathLike[str] | None = None,
    config: Any = None,
    name: str | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    monitor: str = "val_loss",
    mode: str = "min",
    handle_signals: bool = False,
    log_interval: float = 0.25,
    model: Any = None,
    resume: bool = False,
) -> Run:
    """Open a run directory for your own loop and return its :class:`Run`.

    * ``run_dir``: the exact directory (made owner-only, with ``checkpoints/``, if missing); None
      (the default): a fresh ``./runs/<name>-<timestamp>-<hex>`` each time. A directory that holds
      an earlier run raises :class:`~tuiloop.runner.opening.RunExists` unless ``resume=True``,
      which continues it (its log appended). A live one (its lock held by another process)
      raises RuntimeError.
    * ``config``: your settings (a dict, a dataclass or an argparse Namespace), kept in run.json.
    * ``name``: the run's name (default: the directory's name; with ``run_dir=None``, the script's).
    * ``model``: your model, for the monitor's parameter count and device (nothing is kept).
    * ``epochs``, ``steps_per_epoch``: the plan, for the monitor's progress bar and ETA; a run
      that validated ``epochs`` epochs ends as completed.
    * ``monitor``, ``mode``: the metric of :meth:`Run.validated` whose best is tracked.
    * ``handle_signals``: Ctrl+C asks the loop to stop (:meth:`Run.should_stop`), a second one
      forces the process to exit; without it, Ctrl+C raises KeyboardInterrupt as usual (a with
      block then ends the run as stopped).
    * ``log_interval``: seconds between writes of the buffered per-step losses.
    """
    return Run(
        run_dir, config, name, epochs, steps_per_epoch, monitor, mode, handle_signals, log_interval, model, resume
    )


# What a tracked loop obeys (the monitor offers only these keys); force needs no loop.
OBEYED = obeyed_by("track")


class Run:
    """A run directory fed by your loop; made by :func:`track`, ended by :meth:`close` (or a with block).

    Steps are global optimizer steps counted from 1 (they keep growing across epochs); epochs are
    counted from 1, as everywhere in tuiloop.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str] | None,
        config: Any,
        name: str | None,
        epochs: int | None,
        steps_per_epoch: int | None,
        monitor: str,
        mode: str,
        handle_signals: bool,
        log_interval: float,
        model: Any = None,
        resume: bool = False,
    ) -> None:
        self.best = MetricMonitor(monitor, mode)  # mode and config are checked before anything is written
        settings = config_data(config)
        self._model = _model_facts(model)
        opened = open_run(run_dir, name, resume, "tuiloop.track")
        self._life = opened.life
        self.run_dir = opened.life.run_dir
        self.name = opened.info.get("name") or self.run_dir.name
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.monitor = monitor
        self.log_interval = log_interval
        self._obey = Obeying(
            self._stopped,
            lambda cmd: self._warn(
                cmd, f"{cmd!r} does nothing in a loop tracked with tuiloop.track: it obeys pause, save and stop"
            ),
        )
        self.commands = self._obey.commands  # filled by the control socket's thread (and signals); read by the loop
        self.epochs_done = 0  # the last epoch given to validated()
        self._validated_at = 0  # the step of that validation
        self.last_metrics: dict[str, float] = {}
        self.finished: Finished | None = None
        self._extra: dict[str, list[float]] = {}  # this epoch's other per-step values: name -> [sum, count]
        self._saving = False  # save_requested() said yes and no checkpoint() followed yet
        self._warned: set[str] = set()
        self._closed = False
        self._t0 = _clock()
        self._emit = self._life.emit
        self._steps = StepWriter(self._emit, self._warn, log_interval)
        self._open(settings, opened.info, handle_signals, mode)

    # ---- opening and closing -------------------------------------------------------------------
    def _open(self, config: dict[str, Any], info: dict[str, Any], handle_signals: bool, mode: str) -> None:
        life = self._life
        life.standing = self._standing
        self.session = life.session
        try:
            info = life.start(
                self.commands,
                stop=self._obey.request_stop,
                handle_signals=handle_signals,
                **info,
                tracked=True,
                config=config,
            )
            self.name = info["name"]
            self._announce(mode, config)
        except Exception as e:  # the log, the socket, the signals, run.json: say so in the run directory, then raise
            self._closed = True
            life.fail_setup(e)
            life.close()
            raise

    def _announce(self, mode: str, config: dict[str, Any]) -> None:
        self._emit(
            RunStarted(
                run_name=self.name,
                run_dir=str(self.run_dir),
                device=self._model[1],
                device_name=self._model[1],
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
                num_params=self._model[0],
                pid=os.getpid(),
                session=self.session,
                commands=list(OBEYED),
                loop="track",
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
            return self.finished  # type: ignore[return-value]  # None only after a close that raised
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        self._closed = True
        try:
            self._flush()
            status, reason = self._outcome(status, reason)
            s = self._standing()
            finished = Finished(status, reason, s.epoch, s.step, s.best, s.best_epoch, s.monitor, _clock() - self._t0)
            self._emit(finished)  # sampling stops before it: it stays the log's last line
            self._life.summarize(finished, self.last_metrics, self.epochs)
            self.finished = finished
            return finished
        finally:
            self._life.close()

    def _outcome(self, status: str | None, reason: str | None) -> tuple[str, str]:
        planned = f"{fmt.plural(self.epochs, 'epoch')} done" if self.epochs else "the loop ended"
        if status is not None:
            default = {
                "stopped": self._obey.stop_reason or "stopped by the loop",
                "failed": "failed in the loop",
                "early_stopped": "stopped early by the loop",
            }.get(status, planned)
            return status, reason or default
        if self.epochs and self.epochs_done >= self.epochs:
            return "completed", reason or planned
        if self._obey.stopping:
            return "stopped", reason or self._obey.stop_reason
        return "completed", reason or (
            f"the loop ended after {self.epochs_done} of {self.epochs} epochs" if self.epochs else planned
        )

    def fail(self, error: BaseException) -> Finished:
        """End the run as failed by ``error``: its message, your line and the traceback go to the log."""
        if self._closed:
            return self.finished  # type: ignore[return-value]  # None only after a close that raised
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

    def _standing(self) -> Standing:
        b = self.best
        return Standing(self.epochs_done, self.step, b.best, b.best_epoch, self.monitor, self.epochs, self.last_metrics)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Leaving the block: an exception ends the run as failed (KeyboardInterrupt: stopped) and goes on up."""
        if isinstance(exc, Exception):
            self.fail(exc)
        elif isinstance(exc, KeyboardInterrupt):
            self._obey.stop_reason = self._obey.stop_reason or "interrupted (KeyboardInterrupt)"
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
        due = self._steps.add(step, train_loss, lr, samples)
        if extra:
            self._add_extra(extra)
        self._obey.poll()
        if due:
            self._flush()

    def validated(self, epoch: int, **metrics: float) -> bool:
        """Epoch ``epoch`` (from 1) is done, with these metrics (``val_loss=...``); True if it is the
        best by ``monitor``. The epoch's mean train_loss (and of other logged values) is added
        unless given."""
        self._flush()
        values = {k: s / n for k, (s, n) in self._extra.items()}
        total, count = self._steps.epoch_loss
        if count:
            values["train_loss"] = total / count
        values.update({k: float(v) for k, v in metrics.items()})
        value = values.get(self.monitor)
        if value is None:
            self._warn(
                "monitor",
                f"validated() was not given {self.monitor}, the monitored metric: pass it, or track(..., monitor=...) one it gets ({', '.join(values) or 'none'})",
            )
        is_best = value is not None and self.best.update(value, epoch)
        self.epochs_done, self.last_metrics, self._validated_at = epoch, values, self.step
        self._steps.new_epoch()
        self._extra = {}
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
        # the epoch the saved state is in: the one just validated, or (mid-epoch) the one in progress
        epoch = self.epochs_done if self.epochs_done and self.step <= self._validated_at else self.epochs_done + 1
        self._emit(CheckpointSaved(tag, shown, epoch, self.step, self.last_metrics.get(self.monitor), self.monitor))

    def message(self, text: str, level: str = "info") -> None:
        """A line for the monitor's log (``level``: info, warning or error)."""
        self._emit(Message(level, text))

    @property
    def step(self) -> int:
        """The last step logged (0 before the first)."""
        return self._steps.step

    # ---- steering -------------------------------------------------------------------------------
    def should_stop(self) -> bool:
        """True once a stop was asked (``q`` in a monitor, ``tuiloop`` commands, Ctrl+C with handle_signals)."""
        self._obey.poll()
        return self._obey.stopping

    def save_requested(self) -> bool:
        """True once after each ``s`` (presses before the loop looks count once): save now, then call :meth:`checkpoint`."""
        if not self._obey.take_save():
            return False
        self._saving = True
        return True

    def wait_if_paused(self) -> bool:
        """Block while the run is paused (``p``), until it is resumed or stopped; True if it waited.

        A save asked while paused is answered by :meth:`save_requested` after the pause.
        """
        return self._obey.wait_while_paused(self._paused, self._resumed)

    def _paused(self) -> None:
        self._flush()
        self._emit(StateChanged("paused", step=self.step))

    def _resumed(self) -> None:
        self._steps.restart_rate()
        self._emit(StateChanged("running", step=self.step))

    def _stopped(self, reason: str) -> None:
        self._flush()
        self._emit(StateChanged("stopping", reason, step=self.step))

    # ---- writing ------------------------------------------------------------------------------
    def _flush(self) -> None:
        self._steps.flush(self.epochs_done + 1)

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


def _model_facts(model: Any) -> tuple[int, str]:
    """(parameters, device) of the model given to track(); (0, "user loop") without one."""
    if model is None:
        return 0, DEVICE
    params = list(model.parameters())
    return sum(p.numel() for p in params), str(params[0].device) if params else DEVICE
