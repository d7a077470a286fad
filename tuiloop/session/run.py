"""The life of one run, top to bottom: take the run directory, build, train, summarize, close.

Used by ``tuiloop run --headless`` (in the foreground), by the background training process the
live monitor attaches to (:mod:`tuiloop.session.worker`), and from Python (:func:`run_spec`,
``tuiloop.Trainer``). Each step calls the package that owns its part of the run directory.
"""

from __future__ import annotations

import os
import platform
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tuiloop.engine.distributed import SINGLE, Ranks
from tuiloop.engine.events import Event, Failed, Finished, Message, Starting
from tuiloop.engine.exits import EXIT_FAILED, EXIT_FORCED, EXIT_OK, EXIT_USAGE
from tuiloop.rundir.control import ControlServer
from tuiloop.rundir.eventlog import EventLog
from tuiloop.rundir.layout import (
    CHECKPOINTS,
    RUN_INFO,
    SPEC,
    SUMMARY,
    create_run_dir,
    read_json,
    update_info,
    who,
    write_summary,
)
from tuiloop.rundir.lock import RunIsLive, RunLock
from tuiloop.session.signals import Signals
from tuiloop.session.system import SystemSampler, interval_from_env
from tuiloop.spec import Spec, SpecError, resolve
from tuiloop.spec.dump import dump_toml

SESSION_ENV = "TUILOOP_SESSION"  # which start of the run this is; the monitor follows that one
LAUNCHER_ENV = "TUILOOP_LAUNCHER_PID"  # the torchrun process of this node, for a forced end
Sink = Callable[[Event], None]


# ---- the run directory before training ----------------------------------------------------
def new_run_dir(spec: Spec) -> tuple[Path, RunLock]:
    """Create a run directory for ``spec``, locked from its first instant, with spec.toml and run.json."""
    _check_tensorboard(spec)  # the one need of the spec a background run would meet only after this
    run_dir = create_run_dir(Path(spec.run.out_dir), spec.run.name)
    lock = RunLock.acquire(run_dir)
    (run_dir / SPEC).write_text(dump_toml(spec.raw), encoding="utf-8")
    update_info(run_dir, name=spec.run.name, started=time.time(), **_spec_origin(spec), **who())
    return run_dir, lock


def lock_for_resume(run_dir: Path) -> RunLock:
    """The lock of a run to resume; a live run refuses (exit 2) and is left untouched."""
    try:
        return RunLock.acquire(run_dir)
    except RunIsLive:
        raise SpecError(
            f"--resume {run_dir}",
            "the run is live: its training process is still running",
            f"Watch and steer it with: tuiloop attach {run_dir}",
        ) from None


def load_run_spec(run_dir: Path) -> Spec:
    """The resolved spec saved in a run directory, with file targets resolved as at the start."""
    from tuiloop.spec.load import parse_spec

    path = run_dir / SPEC
    info = read_json(run_dir / RUN_INFO) or {}
    if not path.is_file() and info.get("tracked"):
        raise SpecError(
            f"--resume {run_dir}",
            "the run has no spec.toml: it was tracked from your own loop (tuiloop.track)",
            "Continue it in that loop: load your checkpoint and pass the same run directory to tuiloop.track.",
        )
    if not path.is_file():
        raise SpecError(
            f"--resume {run_dir}",
            "the run has no spec.toml: it was started from Python",
            "Resume it from Python: build the same objects and call trainer.resume(RUN_DIR/checkpoints/last.pt).",
        )
    base = Path(info.get("spec_base_dir") or run_dir)
    return parse_spec(path.read_text(encoding="utf-8"), path=path, base_dir=base)


def _check_tensorboard(spec: Spec) -> None:
    """``[run] tensorboard = true`` without tensorboardX: a spec error before the run starts."""
    if spec.run.tensorboard:
        from tuiloop.session.tensorboard import check_spec

        check_spec(spec)


def _spec_origin(spec: Spec) -> dict[str, Any]:
    return {"spec_path": str(spec.path.resolve()) if spec.path else None, "spec_base_dir": str(spec.base_dir)}


def versions() -> dict[str, str]:
    import torch

    from tuiloop import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "tuiloop": __version__}


# ---- a run from a spec ---------------------------------------------------------------------
def execute(
    spec: Spec,
    run_dir: Path | None = None,
    resume: Path | None = None,
    sinks: Iterable[Sink] = (),
    handle_signals: bool = True,
    lock: RunLock | None = None,
    on_ready: Callable[[], None] | None = None,
    ranks: Ranks = SINGLE,
) -> tuple[int, Path]:
    """Build and train; returns (exit status, run directory).

    * A new run in the foreground (no ``run_dir``): spec and build errors raise
      :class:`SpecError` before any run directory exists.
    * The background training process (``run_dir`` made by its parent, ``lock`` the lock it
      handed over): set-up failures are recorded in the run directory as a failed run.
    * ``resume``: the run's lock is taken first (a live run refuses) and the directory stays
      exactly as it was until the trainer is built and the checkpoint loaded; then
      ``on_ready`` is called and the run goes on in it.
    * ``ranks``: this is rank 0 of a distributed run; the other ranks run :func:`follow`.
    """
    sinks = list(sinks)
    if resume is not None:
        return _resume(spec, resume.resolve(), sinks, handle_signals, lock, on_ready, ranks)
    if run_dir is None:
        trainer = _build(spec, _tell(sinks), ranks)
        run_dir, lock = new_run_dir(spec)
        return _train(run_dir, lock, trainer, None, sinks, handle_signals, spec.run.tensorboard)
    lock = lock or RunLock.acquire(run_dir)
    log: EventLog | None = None
    try:
        log = EventLog(run_dir)  # first, so that a build error is in the log too
        trainer = _build(spec, _tell([log, *sinks]), ranks)
    except Exception as e:
        _record_setup_failure(run_dir, [log, *sinks] if log is not None else sinks, e)
        if log is not None:
            log.close()
        lock.release()
        return (EXIT_USAGE if isinstance(e, SpecError) else EXIT_FAILED), run_dir
    return _train(run_dir, lock, trainer, log, sinks, handle_signals, spec.run.tensorboard)


def follow(spec: Spec, resume: Path | None, ranks: Ranks) -> int:
    """A rank other than 0: build the same trainer, restore its share of the checkpoint, train.

    It writes nothing to the run directory but its log and, if it fails, its error (which rank
    0 reports); its collectives are the same as rank 0's, in the same order.
    """
    trainer = _build(spec, lambda phase: None, ranks)
    if resume is not None:
        trainer.resume(resume / CHECKPOINTS / "last.pt")
    signals = Signals(
        trainer.request_stop, lambda: os._exit(EXIT_FORCED), terminate=lambda: _terminated(trainer, ranks)
    )
    signals.install()
    try:
        finished = trainer.loop()
    finally:
        signals.restore()
    return EXIT_FAILED if finished.status == "failed" else EXIT_OK


def _resume(
    spec: Spec,
    run_dir: Path,
    sinks: list[Sink],
    handle_signals: bool,
    lock: RunLock | None,
    on_ready: Callable[[], None] | None,
    ranks: Ranks = SINGLE,
) -> tuple[int, Path]:
    from tuiloop.session import resume

    lock = lock or lock_for_resume(run_dir)
    try:
        edits = resume.changes(load_run_spec(run_dir).raw, spec.raw, f"--resume {run_dir}")
        trainer = _build(spec, _tell(sinks), ranks)
        _tell(sinks)("loading the checkpoint")
        _load_checkpoint(trainer, run_dir)
        resume.apply(trainer, edits, "resume with new settings")
        if trainer.train_batches.persistent_workers:
            trainer.announcements.append(
                Message(
                    "warning",
                    "this resume is not exact: persistent DataLoader workers restart with new random streams, so random augmentation in them differs from an uninterrupted run",
                )
            )
    except BaseException:
        lock.release()
        raise
    # Everything checked: from here on the run directory changes.
    if on_ready is not None:
        on_ready()
    from tuiloop.engine.checkpoint import remove_stale_temps

    (run_dir / SPEC).write_text(dump_toml(spec.raw), encoding="utf-8")
    info = read_json(run_dir / RUN_INFO) or {}
    update_info(run_dir, resumes=[*info.get("resumes", []), time.time()], **_spec_origin(spec), **who())
    (run_dir / SUMMARY).unlink(missing_ok=True)
    remove_stale_temps(run_dir / CHECKPOINTS)  # half-written files of a killed run
    return _train(run_dir, lock, trainer, None, sinks, handle_signals, spec.run.tensorboard)


def _load_checkpoint(trainer: Any, run_dir: Path) -> None:
    """``trainer.resume(last.pt)``, its problems told as one paragraph (exit status 2)."""
    from tuiloop.engine.errors import ResumeError
    from tuiloop.session import resume

    where = f"--resume {run_dir}"
    last = resume.check_checkpoint(run_dir)
    try:
        trainer.resume(last)
    except ResumeError as e:
        raise SpecError(where, str(e)) from None
    except (KeyError, RuntimeError, OSError, ValueError) as e:
        raise SpecError(
            where,
            f"checkpoints/last.pt cannot be read ({type(e).__name__}: {e})",
            "Resume from another checkpoint: copy it over checkpoints/last.pt.",
        ) from None


def check_resume(spec: Spec, run_dir: Path) -> None:
    """Raise :class:`SpecError` if ``run_dir`` cannot go on with ``spec``; changes nothing.

    The launcher of a distributed run asks before any rank starts: it builds the run in this
    one process, on the CPU at full precision, and loads the checkpoint into it.
    """
    from tuiloop.session import resume
    from tuiloop.spec.load import validate

    resume.changes(load_run_spec(run_dir).raw, spec.raw, f"--resume {run_dir}")
    raw = {
        **spec.raw,
        "run": {**spec.raw.get("run", {}), "device": "cpu"},
        "train": {**spec.raw.get("train", {}), "precision": "32-true", "compile": False},
    }
    _load_checkpoint(_build(validate(raw, spec.where, spec.base_dir, spec.path), lambda phase: None), run_dir)


def _build(spec: Spec, tell: Callable[[str], None], ranks: Ranks = SINGLE) -> Any:
    if ranks.is_main:
        _check_tensorboard(spec)
    tell("importing torch")
    from tuiloop.session.build import build_trainer  # imports torch

    tell("importing the spec's targets")
    return build_trainer(resolve(spec), progress=tell, ranks=ranks)


def _tell(sinks: list[Sink]) -> Callable[[str], None]:
    """Announce a start-up phase to ``sinks`` (the monitor shows it while it waits)."""

    def tell(phase: str) -> None:
        event = Starting(phase)
        for sink in sinks:
            sink(event)

    return tell


# ---- training inside the run directory ------------------------------------------------------
def _train(
    run_dir: Path,
    lock: RunLock,
    trainer: Any,
    log: EventLog | None,
    sinks: list[Sink],
    handle_signals: bool,
    tensorboard: bool = False,
) -> tuple[int, Path]:
    mirror = None
    if tensorboard:  # [run] tensorboard = true: the scalars mirrored live into RUN_DIR/tensorboard
        from tuiloop.session.tensorboard import TensorBoardSink

        mirror = TensorBoardSink(run_dir)
    try:
        finished = run_in(run_dir, lock, trainer, log, [*sinks, mirror] if mirror else sinks, handle_signals)
    finally:
        if mirror is not None:
            mirror.close()
    return (EXIT_FAILED if finished.status == "failed" else EXIT_OK), run_dir


def run_in(
    run_dir: Path, lock: RunLock, trainer: Any, log: EventLog | None, sinks: list[Sink], handle_signals: bool = True
) -> Finished:
    """Train ``trainer`` inside its locked run directory; always ends with a summary and releases it all.

    ``log``: the run's event log, or None to open it here (a log that cannot be opened, a full
    disk say, fails the run as any other set-up step does).
    """
    started = time.time()
    server: ControlServer | None = None
    machine: SystemSampler | None = None
    logged: Sink | None = None
    signals = Signals(
        trainer.request_stop,
        lambda: _force(run_dir, trainer, log, started),
        terminate=lambda: _terminated(trainer, trainer.ranks, run_dir, log, started),
    )
    try:
        if log is None:
            log = EventLog(run_dir)
        # the machine's load (CPU, memory, each GPU) into the log every 2 s, from a thread of its own;
        # only rank 0 gets here. Its gate starts it after RunStarted and stops it before Finished.
        machine = SystemSampler(log, interval_from_env(), device=getattr(trainer, "device", None))
        logged = machine.gate(log)
        trainer.run_dir = run_dir
        trainer.session = os.environ.get(SESSION_ENV) or uuid.uuid4().hex[:12]
        trainer.subscribe(logged)
        for sink in sinks:
            trainer.subscribe(sink)
        info = update_info(run_dir, pid=os.getpid(), session=trainer.session, versions=versions())
        trainer.commands.on_force = signals.force
        server = ControlServer(run_dir, trainer.commands, warn=lambda text: log(Message("warning", text))).start()
        if handle_signals:
            signals.install()
        finished = trainer.loop()  # the engine's loop (tuiloop.Trainer.run would come back here)
        summarize(run_dir, finished, trainer.last_metrics, info.get("started", started), trainer.opt.epochs)
        return finished
    except Exception as e:  # set-up inside the run directory failed (event log, socket, signals, announcement)
        told: list[Sink] = []  # the log, then every sink of the trainer's (a Python caller's own too), once each
        for sink in (log, *sinks, *trainer.sinks):
            if sink is not None and sink is not logged and not any(sink is t for t in told):
                told.append(sink)
        return _record_setup_failure(run_dir, told, e, started)
    finally:
        if machine is not None:
            machine.stop()
        if server is not None:
            server.close()
        signals.restore()
        for sink in (logged, *sinks):  # a Trainer run again later must not write into a closed log
            if sink in trainer.sinks:
                trainer.sinks.remove(sink)
        if log is not None:
            log.close()
        lock.release()


def summarize(run_dir: Path, f: Finished, metrics: dict[str, float], started: float, epochs: int | None = None) -> None:
    """summary.json of a run that ended as ``f`` says (also written by ``tuiloop.track``)."""
    write_summary(
        run_dir,
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
            "wall_time_s": f.wall_time_s,
            "started": started,
            "ended": time.time(),
            "versions": versions(),
        },
    )


def _record_setup_failure(run_dir: Path, sinks: list[Sink], error: Exception, started: float | None = None) -> Finished:
    """A run that failed before it could train: say so in its log and summary."""
    frames = traceback.format_exception(error)
    failed = Failed(
        str(error) if isinstance(error, SpecError) else f"{type(error).__name__}: {error}", "setup", "".join(frames)
    )
    finished = Finished("failed", "setup error", 0, 0, None, None, None, 0.0)
    for sink in sinks:
        try:
            sink(failed)
            sink(finished)
        except Exception:
            pass  # the log itself may be what failed; the summary below still says it
    info = read_json(run_dir / RUN_INFO) or {}
    summarize(run_dir, finished, {}, info.get("started", started or time.time()))
    return finished


def _force(run_dir: Path, trainer: Any, log: EventLog, started: float) -> None:
    """End the process now, without saving (a second Ctrl+C, or the force command); record that
    first. In a distributed run this node's other ranks and the launcher go with it."""
    reason = "forced to exit without saving"
    finished = Finished(
        "forced",
        reason,
        trainer.epoch,
        trainer.step,
        trainer.best.best,
        trainer.best.best_epoch,
        trainer.opt.monitor,
        time.time() - started,
    )
    try:
        log(finished)
        summarize(run_dir, finished, trainer.last_metrics, started, trainer.opt.epochs)
        sys.stdout.flush()
        if trainer.ranks.distributed:
            trainer.ranks.kill_local_peers()
            launcher = int(os.environ.get(LAUNCHER_ENV, "0") or 0)
            if launcher:
                os.kill(launcher, signal.SIGKILL)
    finally:
        os._exit(EXIT_FORCED)


def _terminated(
    trainer: Any, ranks: Ranks, run_dir: Path | None = None, log: EventLog | None = None, started: float = 0.0
) -> None:
    """SIGTERM. Alone, or from a launcher ending the run: stop gracefully. From a launcher ending
    the other ranks because one failed: record that rank's error (rank 0) and go at once, since
    a collective with the failed rank would never return."""
    peer = ranks.peer_failure() if ranks.distributed else None
    if peer is None:
        trainer.request_stop("terminated (SIGTERM)")
        return
    if not trainer.ending.acquire(blocking=False):  # the loop is telling that failure: let it finish
        return
    try:
        _tell_peer_failure(trainer, peer, run_dir, log, started)
    finally:
        os._exit(EXIT_FAILED)


def _tell_peer_failure(trainer: Any, peer: dict, run_dir: Path | None, log: EventLog | None, started: float) -> None:
    """Rank 0: the failed rank's error and the run's end, in the log, on the terminal and in the summary."""
    if run_dir is not None and log is not None:
        failed = Failed(
            f"rank {peer['rank']}: {peer['error']}",
            f"rank {peer['rank']}, {peer['where']}",
            peer.get("traceback", ""),
            peer.get("user_frames", []),
        )
        finished = Finished(
            "failed",
            f"rank {peer['rank']} failed",
            trainer.epoch,
            trainer.step,
            trainer.best.best,
            trainer.best.best_epoch,
            trainer.opt.monitor,
            time.time() - started,
        )
        for event in (failed, finished):
            for sink in list(trainer.sinks) or [log]:  # the log and the terminal's lines
                try:
                    sink(event)
                except Exception:
                    pass
        summarize(run_dir, finished, trainer.last_metrics, started, trainer.opt.epochs)
        sys.stdout.flush()


# ---- from Python ---------------------------------------------------------------------------
def run_spec(spec_path: str | Path, overrides: list[str] | None = None, sinks: Iterable[Sink] = ()) -> tuple[int, Path]:
    """Python entry point: train a spec file as ``tuiloop run --headless`` does; returns (exit status, run directory)."""
    from tuiloop.spec import load_spec

    return execute(load_spec(spec_path, overrides), sinks=sinks)
