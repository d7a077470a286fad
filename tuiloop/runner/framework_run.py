"""A run directory fed by a training framework's callbacks, and steered through them.

A framework's callback (the Hugging Face Trainer's: :mod:`tuiloop.integrations.transformers`;
Lightning's: :mod:`tuiloop.integrations.lightning`) turns its hooks into the calls of :class:`FrameworkRun`; everything else is tuiloop's own, as
for a spec run or ``tuiloop.track``:

* :class:`~tuiloop.runner.life.RunLife` owns the run directory (lock, run.json, event log,
  control socket, Ctrl+C, summary), on the main process only; it is chosen as ``tuiloop.track``
  chooses it (:mod:`tuiloop.runner.opening`);
* :class:`~tuiloop.runner.steps.StepWriter` writes the logged step losses a few times a second;
* :class:`~tuiloop.engine.steering.Steering`, the spec engine's own, obeys the commands at step
  boundaries. In several processes every rank agrees on them at the same step (an
  ``all_reduce`` every few steps), and a pause keeps agreeing every half second, so no rank
  waits alone in a collective and no pause meets the process group's timeout.

The framework acts on the answers: :meth:`FrameworkRun.step_end` says whether to save now and
whether to stop, :meth:`FrameworkRun.epoch_end` whether to stop after this epoch; the learning
rate keys scale the optimizers and their schedulers directly (several of each: :class:`~tuiloop.engine.lr.Joined`).
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tuiloop.engine import fmt
from tuiloop.engine.best import MetricMonitor
from tuiloop.engine.commands import Commands, Loop, obeyed_by
from tuiloop.engine.distributed import Ranks
from tuiloop.engine.events import CheckpointSaved, Event, Failed, Finished, Message, Validated
from tuiloop.engine.exits import EXIT_FORCED
from tuiloop.engine.origin import format_frames, user_frames
from tuiloop.engine.progress import Progress
from tuiloop.engine.steering import Steering
from tuiloop.runner.framework_plan import Plan
from tuiloop.runner.life import RunLife, Standing
from tuiloop.runner.obeying import Obeyed
from tuiloop.runner.opening import PathLike, check, open_run
from tuiloop.runner.signals import Signals
from tuiloop.runner.steps import StepWriter


class _Writes:
    """The run's step writer as steering sees it (written before a pause, a save or a stop);
    nothing on a process that does not write the run directory."""

    def __init__(self, run: FrameworkRun) -> None:
        self.run = run
        self.interval = run.log_interval
        self.next_flush = 0.0

    def flush(self) -> None:
        if self.run.steps is not None:
            self.run.steps.flush(self.run.progress.epoch + 1)

    def restart_clock(self) -> None:
        if self.run.steps is not None:
            self.run.steps.restart_rate()


class FrameworkRun:
    """One run of a framework's training loop, watched and steered; made by the framework's callback.

    ``loop`` names the framework in the table of commands (the monitor offers the keys it
    obeys); ``how`` names the callback in errors. Nothing is opened until :meth:`begin`.
    """

    def __init__(
        self,
        loop: Loop,
        how: str,
        run_dir: PathLike | None,
        name: str | None,
        resume: bool,
        handle_signals: bool,
        log_interval: float,
    ) -> None:
        if _main_process():  # only the main process opens the run directory
            check(run_dir, resume, how)
        self.loop, self.how = loop, how
        self.run_dir_arg, self.name, self.resume = run_dir, name, resume
        self.handle_signals, self.log_interval = handle_signals, log_interval
        self.life: RunLife | None = None
        self.plan: Plan | None = None
        self.steering: Steering | None = None
        self.ranks = Ranks()
        self.progress = Progress()  # steering reads the step and the epochs done from it
        self.best = MetricMonitor("val_loss", "min")
        self.last_metrics: dict[str, float] = {}
        self.epochs_done = 0
        self.finished: Finished | None = None
        self.steps: StepWriter | None = None  # the main process's
        self._signals: Signals | None = None
        self._save_tag: str | None = None  # a save steering asked for (s), and the tag it will carry
        self.ending = False  # a command ends the run (q, Ctrl+C, e at the epoch's end): its saves are the last
        self._warned: set[str] = set()
        self._t0 = time.perf_counter()

    @property
    def run_dir(self) -> Path | None:
        """The run directory (on the main process, once training began), else None."""
        return self.life.run_dir if self.life is not None else None

    # ---- beginning ------------------------------------------------------------------------------
    def begin(
        self, plan: Plan, ranks: Ranks, optimizer: Any, scheduler: Any, config: dict[str, Any], device: Any
    ) -> None:
        """Training begins, on every process at once: the main one opens the run directory and
        announces the run; all of them obey the commands from here (``device``: where the
        agreement's small tensor lives)."""
        self.plan, self.ranks, self._t0 = plan, ranks, time.perf_counter()
        self.ending, self._save_tag = False, None
        self.best = MetricMonitor(plan.monitor, plan.mode)
        self.progress = Progress(epoch=plan.start_step // plan.steps_per_epoch if plan.steps_per_epoch else 0)
        self.progress.step = plan.start_step
        commands = Obeyed(obeyed_by(self.loop), self._refuse)
        steering = self.steering = Steering(
            commands, ranks, device, self.progress, _Writes(self), optimizer, scheduler, self._emit, self._ask_save
        )
        if ranks.distributed:  # where every rank runs: the machines for the monitor, the processes for a forced end
            ranks.peers = tuple((str(h), int(p)) for h, p in ranks.gather((socket.gethostname(), os.getpid())))
            ranks.nodes = tuple(dict.fromkeys(host for host, _ in ranks.peers))
        error: Exception | None = None
        if ranks.is_main:
            try:
                self._open(plan, config, commands, steering)
            except Exception as e:
                error = e
        if ranks.distributed:  # the others learn whether it could
            said = ranks.broadcast(f"{type(error).__name__}: {error}" if error is not None else None)
            if error is None and said is not None:
                raise RuntimeError(f"the main process could not open the run directory: {said}")
            if self.life is not None:
                self.life.on_forced = ranks.kill_local_peers
        if error is not None:
            self.steering = None
            raise error
        if self.life is None and self.handle_signals:  # another rank: a signal stops it through the agreement
            self._signals = Signals(steering.request_stop, lambda: os._exit(EXIT_FORCED))
            self._signals.install()

    def _emit(self, event: Event) -> None:
        if self.life is not None:
            self.life.emit(event)

    def _open(self, plan: Plan, config: dict[str, Any], commands: Commands, steering: Steering) -> None:
        opened = open_run(self.run_dir_arg, self.name or plan.name, self.resume, self.how)
        life = self.life = opened.life
        life.standing = self._standing
        self.steps = StepWriter(life.emit, self._warn, self.log_interval)
        try:
            info = life.start(
                commands,
                stop=steering.request_stop,
                handle_signals=self.handle_signals,
                **opened.info,
                tracked=True,
                loop=self.loop,
                config=config,
            )
            life.emit(plan.started(info["name"], life.run_dir, life.session, self.ranks, self.loop))
            atexit.register(self._at_exit)
        except Exception as e:
            life.fail_setup(e)
            life.close()
            self.life = None
            raise

    # ---- while training -------------------------------------------------------------------------
    def epoch_begins(self, epoch: int) -> None:
        """Epoch ``epoch`` (from 1) begins."""
        self.progress.epoch = epoch - 1

    def log(self, step: int, loss: Any, lr: float | None, grad_norm: float | None, steps: int) -> None:
        """The framework logged its loss at ``step`` (a float, or a tensor left on its device, read
        at the next write): the mean over the ``steps`` steps since its last log."""
        writer, plan = self.steps, self.plan
        if writer is None or plan is None:
            return
        if writer.add(step, loss, lr, steps * plan.samples_per_step, grad_norm):
            writer.flush(self.progress.epoch + 1)

    def step_end(self, step: int, save_on_stop: bool = True) -> tuple[bool, bool]:
        """An optimizer step ended (every process, the same step): obey the commands (a pause
        blocks here); (save now, stop now). A stop saves, as a spec run's does, where
        ``save_on_stop`` (a framework that saves as it ends anyway says False)."""
        st = self.steering
        if st is None:
            return False, False
        self.progress.step = step
        if self.ranks.distributed:
            st.until_agree -= 1
            if st.until_agree <= 0:
                st.agree()
        elif st.commands.pending:
            st.handle()
        stop = st.state == "stopping"
        self.ending |= stop
        return self._save_tag is not None or (stop and save_on_stop), stop

    def epoch_end(self, epoch: int) -> bool:
        """Epoch ``epoch`` ended (every process): True if the run stops after it (``e``)."""
        self.epochs_done = epoch
        if self.steps is not None:
            self.steps.flush(epoch)
            self.steps.new_epoch(self.progress.step)
        stop = self.steering is not None and self.steering.stop_after_epoch
        self.ending |= stop
        return stop

    def evaluated(self, epoch: int, step: int, metrics: dict[str, float], duration_s: float = 0.0) -> None:
        """A validation ran at ``step`` of epoch ``epoch``, with these metrics (as tuiloop names them);
        the mean of the losses logged since the last one is added as train_loss."""
        writer = self.steps
        if writer is None or self.life is None:  # another rank, or an evaluation after the training
            return
        writer.flush(self.progress.epoch + 1)
        mean = writer.mean_since()
        values = {"train_loss": mean} if mean is not None else {}
        values.update(metrics)
        value = values.get(self.best.monitor)
        is_best = value is not None and self.best.update(value, epoch)
        self.last_metrics = values
        self.life.emit(Validated(epoch, step, values, is_best, duration_s))

    def saved(self, path: str, epoch: int, step: int, tag: str = "periodic") -> None:
        """The framework saved a checkpoint at ``path``: the one ``s`` asked for (manual), the one
        of a run a command ends (last), else ``tag``."""
        tag, self._save_tag = self._save_tag or ("last" if self.ending else tag), None
        if self.life is None:
            return
        assert self.steps is not None
        self.steps.flush(self.progress.epoch + 1)
        full = os.path.abspath(path)
        inside = full.startswith(str(self.life.run_dir) + os.sep)
        shown = os.path.relpath(full, self.life.run_dir) if inside else full
        monitor = self.best.monitor
        self.life.emit(CheckpointSaved(tag, shown, epoch, step, self.last_metrics.get(monitor), monitor))

    def message(self, text: str, level: str = "info") -> None:
        if self.life is not None:
            self.life.emit(Message(level, text))

    # ---- ending -------------------------------------------------------------------------------
    def end(self, step: int, epochs_done: int, stopped_by: str) -> Finished | None:
        """Training ended (every process): the summary, and the run directory released.
        ``stopped_by``: the reason for an end before the planned steps that no command asked for."""
        self.epochs_done = epochs_done
        if self._signals is not None:
            self._signals.restore()
            self._signals = None
        if self.life is None:
            return None
        status, reason = self._outcome(step)
        if status == "completed" and stopped_by:
            status, reason = "early_stopped", stopped_by
        return self._close(status, reason, step)

    def _outcome(self, step: int) -> tuple[str, str]:
        st, plan = self.steering, self.plan
        assert st is not None and plan is not None
        if st.state == "stopping":
            return "stopped", st.stop_reason or "stopped by request"
        if st.stop_after_epoch and step < plan.max_steps:
            return "stopped", f"stopped after epoch {self.epochs_done}, as asked"
        done = fmt.plural(plan.epochs, "epoch") if plan.epochs else fmt.plural(step, "step")
        return "completed", f"{done} done"

    def _close(self, status: str, reason: str, step: int, *before: Event) -> Finished:
        life = self.life
        assert life is not None
        atexit.unregister(self._at_exit)
        try:
            if self.steps is not None:
                self.steps.flush(self.progress.epoch + 1)
            for event in before:
                life.emit(event)
            b = self.best
            wall = time.perf_counter() - self._t0
            finished = Finished(status, reason, self.epochs_done, step, b.best, b.best_epoch, b.monitor, wall)
            life.emit(finished)
            life.summarize(finished, self.last_metrics, self.plan.epochs if self.plan else None)
            self.finished = finished
            return finished
        finally:
            life.close()
            self.life = None

    def abandon(self) -> None:
        """Training begins again while the last one never ended (it raised, and the framework
        called no end): that one failed."""
        if self.life is not None:
            failed = Failed("the training ended without the end hook (it raised?)", "training", "")
            self._close("failed", "the training ended without finishing", self.progress.step, failed)

    def _at_exit(self) -> None:
        """The process ends with the run open: training raised and nothing called :meth:`end`."""
        self.fail(getattr(sys, "last_value", None))  # an exception nobody caught (set before atexit runs)

    def fail(self, error: BaseException | None) -> None:
        """Training raised ``error`` (None: unknown) and will not end: the run failed, with its traceback."""
        if self.life is None:
            return
        if isinstance(error, BaseException):
            text = f"{type(error).__name__}: {error}"
            frames = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            failed = Failed(text, "training", frames, format_frames(user_frames(error)))
            reason = f"{type(error).__name__} in training"
        else:
            failed = Failed("the process ended while training", "training", "")
            reason = "the process ended while training"
        self._close("failed", reason, self.progress.step, failed)

    def _standing(self) -> Standing:
        b, plan = self.best, self.plan
        return Standing(
            self.epochs_done,
            self.progress.step,
            b.best,
            b.best_epoch,
            b.monitor,
            plan.epochs if plan else None,
            self.last_metrics,
        )

    # ---- asked by steering ----------------------------------------------------------------------
    def _ask_save(self, tag: str) -> None:
        """Steering asks for a checkpoint: the framework writes its own at this step."""
        self._save_tag = tag

    def _refuse(self, command: str) -> None:
        self._warn(
            command, f"{command!r} does nothing in a {self.loop} run: it obeys {', '.join(obeyed_by(self.loop))}"
        )

    def _warn(self, key: str, text: str) -> None:
        if key not in self._warned and self.life is not None:
            self._warned.add(key)
            self.life.emit(Message("warning", text))


def _main_process() -> bool:
    """Whether this process is the main one of its launch (torchrun sets RANK; Lightning's own
    launcher starts the others with LOCAL_RANK and NODE_RANK)."""
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"]) == 0
    return int(env.get("LOCAL_RANK", "0")) == 0 and int(env.get("NODE_RANK", "0")) == 0
