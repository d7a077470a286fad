"""A run directory's life, owned by one object: open it, announce, obey commands, sample the
machine, close with a summary, fail cleanly.

Every kind of run lives through a :class:`RunLife`: a spec run (:mod:`tuiloop.runner.spec_run`), the
Python ``tuiloop.Trainer`` given a ``run_dir``, and ``tuiloop.track`` for your own loop. They
differ only in the loop that feeds it events and obeys its commands::

    life = RunLife.open(run_dir)                      # the lock
    try:
        life.start(commands, stop=..., handle_signals=True, **run_json_fields)  # the log, the socket...
        ...                                           # the loop calls life.emit(event)
        life.summarize(finished, metrics, epochs)
    except Exception as e:
        life.fail_setup(e)                            # the log and summary.json say so
    finally:
        life.close()                                  # sampler, socket, signals, log, lock
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from tuiloop import __version__
from tuiloop.engine.commands import Commands
from tuiloop.engine.events import Event, Failed, Finished, Message, RunStarted, Tested
from tuiloop.engine.exceptions import StorageError
from tuiloop.engine.exits import EXIT_FAILED, EXIT_FORCED
from tuiloop.engine.origin import error_text
from tuiloop.rundir.control import ControlServer
from tuiloop.rundir.eventlog import EventLog
from tuiloop.rundir.handle import RunDir
from tuiloop.rundir.layout import CHECKPOINTS, EVENTS, RUN_INFO, SUMMARY, read_json_in, update_info, who, write_summary
from tuiloop.rundir.lock import RunIsLive, RunLock
from tuiloop.runner.notify import Notifier
from tuiloop.runner.processes import end_children
from tuiloop.runner.signals import Signals
from tuiloop.runner.stall import StallWatch
from tuiloop.runner.system import SystemSampler, interval_from_env
from tuiloop.spec import SpecError

STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # the disk, not the code: told without a traceback
SESSION_ENV = "TUILOOP_SESSION"  # which start of the run this is; the monitor follows that one
Sink = Callable[[Event], None]


class RunInUse(RuntimeError):
    """The run directory is live: another process holds its lock."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(
            f"{run_dir} is a live run (another process trains in it); "
            f"watch it with tuiloop attach {run_dir}, or pass another run directory"
        )


@dataclass(frozen=True)
class Standing:
    """Where a run stands: what an ending written from outside its loop (a forced exit, a failed
    rank) reports."""

    epoch: int  # epochs done
    step: int
    best: float | None
    best_epoch: int | None
    monitor: str | None
    epochs: int | None  # planned
    metrics: dict[str, float]  # the last validation's


def new_session() -> str:
    """This start's id: the one the launching process chose, or a new one."""
    return os.environ.get(SESSION_ENV) or uuid.uuid4().hex[:12]


def versions() -> dict[str, str]:
    """The versions a run's run.json and summary.json record."""
    import torch  # lazy: keeps torch out of the monitor, which loads this module (through training_process)

    return {"python": platform.python_version(), "torch": torch.__version__, "tuiloop": __version__}


def test_summary(t: Tested) -> dict[str, Any]:
    """summary.json's ``test``: the test split's metrics and the checkpoint they came from."""
    return {
        "metrics": t.metrics,
        "checkpoint": t.checkpoint or None,
        "sha256": t.sha256,
        "epoch": t.epoch,
        "step": t.step,
        "samples": t.samples,
    }


def _unopened(event: Event) -> None:
    raise RuntimeError(f"the run's event log is not open yet ({event.kind})")


class RunLife:
    """The life of one run directory in this process, from its lock to its summary.

    ``sinks`` hear every event beside the log (the terminal's lines, the TensorBoard mirror);
    ``standing`` says where the loop is, for an ending written from outside it; ``on_forced``
    ends what else must go with a forced exit (a distributed run's other ranks).
    """

    def __init__(self, run_dir: Path, lock: RunLock) -> None:
        self.run_dir = run_dir
        self.lock = lock
        self.home = lock.home  # every file of the run is written through this handle, never a link
        self._checkpoints: RunDir | None = None
        self.log: EventLog | None = None  # opened by open_log() or start()
        self.session = new_session()
        self.started = time.time()  # this start of the run (a resumed run started earlier: see run.json)
        self.sinks: list[Sink] = []
        self.standing: Callable[[], Standing] | None = None
        self.on_forced: Callable[[], None] | None = None
        self.info: dict[str, Any] = {}
        self._logged: Sink = _unopened  # the log, through the sampler's gate once started
        self._sampler: SystemSampler | None = None
        self.watch: StallWatch | None = None  # started with RunStarted, stopped before Finished
        self.notifier: Notifier | None = None  # [notify] and the user's config.toml: made with the log
        self._server: ControlServer | None = None
        self._signals: Signals | None = None
        self._closed = False
        self.unwritable: StorageError | None = None  # the first write of the run directory that failed

    @classmethod
    def open(cls, run_dir: Path, lock: RunLock | None = None, create: bool = False) -> RunLife:
        """Take ``run_dir``'s lock (``lock``: one already held for it).

        ``create``: make the directory, owner-only, with ``checkpoints/``, if it is missing.
        Raises :class:`RunInUse` if another process holds the lock; nothing is written then, and
        :class:`~tuiloop.rundir.handle.RunDirError` for a directory that is a link or not this user's.
        """
        if lock is None:
            home = RunDir.open(run_dir, create=create)
            try:
                if create:
                    home.subdir(CHECKPOINTS).close()
                lock = RunLock.acquire(home)
            except RunIsLive:
                home.close()
                raise RunInUse(run_dir) from None
            except BaseException:
                home.close()
                raise
        return cls(run_dir, lock)

    def open_log(self) -> EventLog:
        """The run's event log, opened on the first call (a full disk raises here: a set-up
        failure that :meth:`fail_setup` records as far as it can)."""
        if self.log is None:
            self.log = self._logged = EventLog(self.home, on_gone=self._gone)
            self.notifier = Notifier.for_run(self.home, self.run_dir, self.emit)
        return self.log

    def checkpoint_folder(self) -> RunDir:
        """The handle on ``checkpoints/`` the trainer saves through (made if missing; closed with the life)."""
        if self._checkpoints is None:
            self._checkpoints = self.home.subdir(CHECKPOINTS)
        return self._checkpoints

    # ---- live ------------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """An event of the run: into the log, then to every sink.

        A log that cannot be written (a full disk, a read-only folder; met here or by another
        writer of the log, the machine sampler) raises :class:`StorageError` once, after the
        sinks have the event, so that a loop still training ends the run with it and says what
        is safe, to the sinks alone from then on. An event that tells the run's end (a failure,
        an error, the last event) is not interrupted: the sinks have it."""
        if isinstance(event, Finished):
            self._quiet_server()
            if self.watch is not None:
                self.watch.stop()
        elif isinstance(event, RunStarted) and self.watch is not None:
            self.watch.start()  # from the loop's thread: the one whose stack a stall shows
        failed = None
        if self.unwritable is None:
            with contextlib.suppress(OSError):  # the log keeps its error
                self._logged(event)
            if self.log is not None and self.log.error is not None:
                failed = self.unwritable = StorageError(EVENTS, self.log.error)
        for sink in self.sinks:
            sink(event)
        if self.notifier is not None:
            self.notifier(event)
        if failed is None:
            return
        if type(event) is Finished:
            self._tell(Message("error", f"{failed}: the event log ends before the run did"))
        elif not (type(event) is Failed or (type(event) is Message and event.level == "error")):
            raise failed

    def _tell(self, event: Event) -> None:
        """``event`` to the sinks alone (the terminal's lines, the TensorBoard mirror)."""
        for sink in self.sinks:
            sink(event)

    def start(
        self,
        commands: Commands,
        stop: Callable[[str], None],
        terminate: Callable[[], None] | None = None,
        handle_signals: bool = True,
        device: Any = None,
        **info: Any,
    ) -> dict[str, Any]:
        """Make the run live: run.json (this process, its session and versions, and ``info``), the
        control socket feeding ``commands``, and (``handle_signals``, on the main thread) Ctrl+C
        and SIGTERM calling ``stop`` / ``terminate``; a second Ctrl+C or the force command ends
        the process through :meth:`force`. The machine is sampled from RunStarted to Finished.
        Returns run.json as written."""
        self.info = update_info(self.home, pid=os.getpid(), session=self.session, versions=versions(), **who(), **info)
        log = self.open_log()
        self._sampler = SystemSampler(log, interval_from_env(), device=device)
        self._logged = self._sampler.gate(log)
        commands.on_force = self.force
        self._server = ControlServer(self.home, commands, warn=lambda text: log(Message("warning", text)))
        self._server.start()
        self._signals = Signals(stop, self.force, terminate=terminate)
        if handle_signals:
            self._signals.install()
        if self.home.warning:  # a folder others may write to: they can rename or remove the run
            self.emit(Message("warning", self.home.warning))
        return self.info

    def _quiet_server(self) -> None:
        """Before the log's last line: the control socket's warnings held back are counted, and end."""
        if self._server is not None:
            self._server.quiet()

    @property
    def first_started(self) -> float:
        """When the run first started (run.json), across resumes."""
        started = self.info.get("started") or (read_json_in(self.home, RUN_INFO) or {}).get("started")
        return started if isinstance(started, (int, float)) else self.started

    # ---- endings ---------------------------------------------------------------------------------
    def summarize(
        self, f: Finished, metrics: dict[str, float], epochs: int | None = None, tested: Tested | None = None
    ) -> None:
        """summary.json of a run that ended as ``f`` says (``tested``: its test split's result);
        if it cannot be written, that is told (unless a write of the run directory already failed
        and was told)."""
        try:
            self._write_summary(f, metrics, epochs, tested)
        except OSError as e:
            if self.unwritable is None:
                self.unwritable = StorageError(SUMMARY, e)
                text = f"{self.unwritable}: the run ended {f.status}, and ls will list it as crashed"
                with contextlib.suppress(OSError):
                    self._logged(Message("error", text))
                self._tell(Message("error", text))

    def _write_summary(self, f: Finished, metrics: dict[str, float], epochs: int | None, tested: Tested | None) -> None:
        write_summary(
            self.home,
            {
                "status": f.status,
                "reason": f.reason,
                "epochs": epochs,
                "epochs_done": f.epochs_done,
                "steps": f.step,
                "monitor": f.monitor,
                "best_value": f.best_value,
                "best_epoch": f.best_epoch,
                "final_metrics": metrics,
                **({"test": test_summary(tested)} if tested is not None else {}),
                "wall_time_s": f.wall_time_s,
                "started": self.first_started,
                "ended": time.time(),
                "versions": versions(),
            },
        )

    def record_end(
        self, finished: Finished, metrics: dict[str, float], epochs: int | None, sinks: Iterable[Sink], *before: Event
    ) -> None:
        """An ending the loop did not write itself: ``before`` and ``finished`` to ``sinks`` (each
        once; one that fails is passed over, since the log itself may be what failed), then
        summary.json."""
        self._quiet_server()
        told: list[Sink] = []
        for sink in sinks:
            if not any(sink is t for t in told):
                told.append(sink)
        for event in (*before, finished):
            for sink in told:
                try:
                    sink(event)
                except Exception:
                    pass
        self.summarize(finished, metrics, epochs)

    def fail_setup(self, error: BaseException, also: Iterable[Sink] = ()) -> Finished:
        """The run failed before it could train: the log, the sinks and ``also`` are told, and
        summary.json says so."""
        frames = traceback.format_exception(error)
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:  # a full disk: no traceback needed
            name = os.path.relpath(error.filename, self.run_dir) if error.filename else "the run directory"
            error = StorageError(str(name), error)
        if isinstance(error, StorageError):
            frames = []
        text = str(error) if isinstance(error, (SpecError, StorageError)) else error_text(error)
        finished = Finished("failed", "setup error", 0, 0, None, None, None, 0.0)
        told: list[Sink] = [*([self.log] if self.log is not None else []), *self.sinks, *also]
        told += [self.notifier] if self.notifier is not None else []
        self.record_end(finished, {}, None, told, Failed(text, "setup", "".join(frames)))
        return finished

    def force(self) -> None:
        """End the process now, without saving (a second Ctrl+C, or the force command); the log
        and summary.json say so first, and ``on_forced`` ends what must go with it; every process
        this one started goes too (a DataLoader worker stuck in the user's ``__getitem__``)."""
        try:
            s = self.standing() if self.standing is not None else Standing(0, 0, None, None, None, None, {})
            wall = time.time() - self.started
            finished = Finished(
                "forced", "forced to exit without saving", s.epoch, s.step, s.best, s.best_epoch, s.monitor, wall
            )
            self.record_end(finished, s.metrics, s.epochs, [self.log] if self.log is not None else [])
            sys.stdout.flush()
            if self.on_forced is not None:
                self.on_forced()
        finally:
            end_children()
            os._exit(EXIT_FORCED)

    def _gone(self, why: str) -> None:
        """The run directory was deleted or moved: nothing can be recorded, and every later
        write would create it again, without its log. End the process at once."""
        try:
            os.write(2, f"\ntuiloop: error: {why}; the run ends here, writing nothing more\n".encode())
        except OSError:
            pass
        end_children()
        os._exit(EXIT_FAILED)

    def close(self) -> None:
        """Stop sampling, close the socket, restore the signals, close the log, release the lock.
        Closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._sampler is not None:
            self._sampler.stop()
        if self.watch is not None:
            self.watch.stop()
        if self.notifier is not None:
            self.notifier.close()  # the notices still queued are sent (within their timeout) while the log is open
        if self._server is not None:
            self._server.close()
        if self._signals is not None:
            self._signals.restore()
        if self.log is not None:
            self.log.close()
        if self._checkpoints is not None:
            self._checkpoints.close()
        self.lock.release()  # and the handle on the directory

    def __enter__(self) -> RunLife:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
