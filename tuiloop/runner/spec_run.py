"""The life of one run, top to bottom: take the run directory, build, train, summarize, close.

Used by ``tuiloop run --headless`` (in the foreground), by the background training process the
live monitor attaches to (:mod:`tuiloop.runner.training_process`), and from Python (:func:`run_spec`,
``tuiloop.Trainer``). Each step calls the package that owns its part of the run directory.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tuiloop.engine.distributed import SINGLE, Ranks
from tuiloop.engine.events import Failed, Finished, Message, Starting
from tuiloop.engine.exits import EXIT_FAILED, EXIT_FORCED, EXIT_OK, EXIT_USAGE
from tuiloop.rundir.handle import RunDir, RunDirError
from tuiloop.rundir.history import TENSORBOARD_DIR
from tuiloop.rundir.layout import (
    CHECKPOINTS,
    RUN_INFO,
    SPEC,
    SUMMARY,
    create_run_dir,
    read_json_in,
    update_info,
    who,
)
from tuiloop.rundir.lock import RunIsLive, RunLock
from tuiloop.rundir.records import read_info
from tuiloop.runner.facts import inherit_facts
from tuiloop.runner.life import RunLife, Sink, Standing
from tuiloop.runner.processes import end_children
from tuiloop.runner.signals import Signals
from tuiloop.runner.stall import StallWatch
from tuiloop.runner.tensorboard import TensorBoardSink, check_spec
from tuiloop.runner.writable import check_out_dir, out_dir_error, remove_half_made, resume_error, stage_resume
from tuiloop.spec import Spec, SpecError, load_spec, resolve
from tuiloop.spec.dump import dump_toml
from tuiloop.spec.load import parse_spec, validate

IMPORTING = ("importing torch", "importing the spec's targets")  # the start-up phases before the user's code is in
LAUNCHER_ENV = "TUILOOP_LAUNCHER_PID"  # the torchrun process of this node, for a forced end


# ---- the run directory before training ----------------------------------------------------
def new_run_dir(spec: Spec) -> tuple[Path, RunLock]:
    """Create a run directory for ``spec``, locked from its first instant, with spec.toml and
    run.json; the lock holds the handle it is written through. An ``out_dir`` that every user
    may write to (without the sticky bit) is refused."""
    _check_tensorboard(spec)  # the one need of the spec a background run would meet only after this
    out_dir = Path(spec.run.out_dir)
    check_out_dir(out_dir, spec.run.name, spec.where)
    try:
        home = create_run_dir(out_dir, spec.run.name)
    except RunDirError as e:
        raise SpecError(f"[run] out_dir = {e.where}", e.problem, f"{e.fix}.") from None
    except OSError as e:
        raise out_dir_error(spec.where, out_dir, e) from None
    try:
        lock = RunLock.acquire(home)
        try:
            home.write_atomic(SPEC, dump_toml(spec.raw).encode())
            update_info(home, name=spec.run.name, started=time.time(), **_spec_origin(spec), **who())
        except BaseException:
            lock.release()
            raise
    except BaseException as e:  # a disk that filled since the check: leave nothing half-made
        remove_half_made(home.path)
        if isinstance(e, OSError):
            raise out_dir_error(spec.where, out_dir, e) from None
        raise
    return home.path, lock


def lock_for_resume(run_dir: Path) -> RunLock:
    """The lock of a run to resume; a live run refuses (exit 2) and is left untouched, and so
    does a run directory that is a link or another user's."""
    try:
        return RunLock.acquire(run_dir)
    except RunDirError as e:
        raise SpecError(f"--resume {run_dir}", e.problem, f"{e.fix}.") from None
    except RunIsLive:
        raise SpecError(
            f"--resume {run_dir}",
            "the run is live: its training process is still running",
            f"Watch and steer it with: tuiloop attach {run_dir}",
        ) from None
    except OSError as e:  # a read-only run directory: run.lock cannot even be opened for writing
        raise resume_error(run_dir, e) from None


def load_run_spec(run_dir: Path) -> Spec:
    """The resolved spec saved in a run directory, with file targets resolved as at the start."""
    path = run_dir / SPEC
    info, _ = read_info(run_dir)  # a damaged field reads as absent
    if not path.is_file() and info.get("tracked"):
        raise SpecError(
            f"--resume {run_dir}",
            "the run has no spec.toml: it was written by your own loop (tuiloop.track, or a framework's callback)",
            "Continue it in that loop: load your checkpoint and pass the same run directory with resume=True "
            f"(tuiloop.track({str(run_dir)!r}, resume=True), TuiloopCallback(run_dir={str(run_dir)!r}, resume=True)).",
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
        check_spec(spec)


def _spec_origin(spec: Spec) -> dict[str, Any]:
    return {"spec_path": str(spec.path.resolve()) if spec.path else None, "spec_base_dir": str(spec.base_dir)}


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
        check_out_dir(Path(spec.run.out_dir), spec.run.name, spec.where)  # before the data loads
        trainer = _build(spec, _tell(sinks), ranks)
        run_dir, lock = new_run_dir(spec)
        return _train(RunLife.open(run_dir, lock), trainer, sinks, handle_signals, spec.run.tensorboard)
    life = RunLife.open(run_dir, lock)
    life.sinks = sinks
    try:
        life.open_log()  # first, so that a build error is in the log too
        trainer = _build(spec, _tell([life.emit]), ranks)
        if spec.facts:  # the data's facts filled [model]: spec.toml says what the model was built with
            life.home.write_atomic(SPEC, dump_toml(spec.raw).encode())
    except (Exception, SystemExit) as e:
        life.fail_setup(e)
        life.close()
        return (EXIT_USAGE if isinstance(e, SpecError) else EXIT_FAILED), run_dir
    return _train(life, trainer, sinks, handle_signals, spec.run.tensorboard)


def follow(spec: Spec, resume: Path | None, ranks: Ranks) -> int:
    """A rank other than 0: build the same trainer, restore its share of the checkpoint, train.

    It writes nothing to the run directory but its log and, if it fails, its error (which rank
    0 reports); its collectives are the same as rank 0's, in the same order.
    """
    trainer = _build(spec, lambda phase: None, ranks)
    if resume is not None:
        trainer.resume(resume / CHECKPOINTS / "last.pt")
    signals = Signals(trainer.request_stop, _forced_out, terminate=lambda: _terminated(trainer, None))
    signals.install()
    watch = StallWatch.of_follower(trainer)  # its stall goes to its own log, and to rank 0's
    watch.start()
    try:
        finished = trainer.loop()
    finally:
        signals.restore()
        watch.stop()
    return EXIT_FAILED if finished.status == "failed" else EXIT_OK


def _forced_out() -> None:
    """A rank other than 0 forced to go: its DataLoader workers go with it."""
    end_children()
    os._exit(EXIT_FORCED)


def _resume(
    spec: Spec,
    run_dir: Path,
    sinks: list[Sink],
    handle_signals: bool,
    lock: RunLock | None,
    on_ready: Callable[[], None] | None,
    ranks: Ranks = SINGLE,
) -> tuple[int, Path]:
    from tuiloop.runner import resume  # lazy: torch; the monitor's R key loads this module

    lock = lock or lock_for_resume(run_dir)
    try:
        last = resume.checked_checkpoint(lock.home, run_dir)  # read once, checked before the spec is built
        edits = resume.changes(inherit_facts(load_run_spec(run_dir).raw, spec), spec.raw, f"--resume {run_dir}")
        trainer = _build(spec, _tell(sinks), ranks)
        _tell(sinks)("loading the checkpoint")
        resume.load_checkpoint(trainer, run_dir, last)
        resume.recall_saves(trainer, lock.home)  # best.pt's record, for the test at the end
        resume.apply(trainer, edits, "resume with new settings")
        if trainer.train_batches.persistent_workers:
            trainer.announcements.append(
                Message(
                    "warning",
                    "this resume is not exact: persistent DataLoader workers restart with new random streams, so random augmentation in them differs from an uninterrupted run",
                )
            )
        # Everything checked. The new spec.toml and run.json are written beside the old ones
        # first: on a full or read-only disk that fails, and the run directory is as it was.
        info = read_json_in(lock.home, RUN_INFO) or {}
        resumes: list[Any] = info["resumes"] if isinstance(info.get("resumes"), list) else []
        info.update(resumes=[*resumes, time.time()], **_spec_origin(spec))
        files = stage_resume(lock.home, dump_toml(spec.raw), info)
    except BaseException:
        lock.release()
        raise
    try:
        if on_ready is not None:
            on_ready()
    except BaseException:
        files.discard()
        lock.release()
        raise
    files.commit()  # from here on the run directory changes
    home = lock.home
    home.unlink(SUMMARY)
    with home.subdir(CHECKPOINTS) as checkpoints:
        checkpoints.remove_stale_temps()  # half-written files of a killed run
    return _train(RunLife.open(run_dir, lock), trainer, sinks, handle_signals, spec.run.tensorboard)


def check_resume(spec: Spec, run_dir: Path) -> None:
    """Raise :class:`SpecError` if ``run_dir`` cannot go on with ``spec``; changes nothing.

    The launcher of a distributed run asks before any rank starts: it builds the run in this
    one process, on the CPU at full precision, and loads the checkpoint into it.
    """
    from tuiloop.runner import resume  # lazy: torch; the monitor's R key loads this module

    with RunDir.open(run_dir) as home:
        last = resume.checked_checkpoint(home, run_dir)
    resume.changes(inherit_facts(load_run_spec(run_dir).raw, spec), spec.raw, f"--resume {run_dir}")
    raw = {
        **spec.raw,
        "run": {**spec.raw.get("run", {}), "device": "cpu"},
        "train": {**spec.raw.get("train", {}), "precision": "32-true", "compile": False},
    }
    resume.load_checkpoint(
        _build(validate(raw, spec.where, spec.base_dir, spec.path), lambda phase: None), run_dir, last
    )


def _build(spec: Spec, tell: Callable[[str], None], ranks: Ranks = SINGLE) -> Any:
    if ranks.is_main:
        _check_tensorboard(spec)
    tell(IMPORTING[0])
    from tuiloop.runner.build import build_trainer  # lazy: imports torch, after the run says "importing torch"

    tell(IMPORTING[1])
    return build_trainer(resolve(spec), progress=tell, ranks=ranks)


def _tell(sinks: list[Sink]) -> Callable[[str], None]:
    """Announce a start-up phase to ``sinks`` (the monitor shows it while it waits)."""

    def tell(phase: str) -> None:
        event = Starting(phase)
        for sink in sinks:
            sink(event)

    return tell


# ---- training inside the run directory ------------------------------------------------------
def _train(life: RunLife, trainer: Any, sinks: list[Sink], handle_signals: bool, tensorboard: bool) -> tuple[int, Path]:
    life.sinks = sinks
    mirror = None
    if tensorboard:  # [run] tensorboard = true: the scalars mirrored live into RUN_DIR/tensorboard
        life.home.subdir(TENSORBOARD_DIR).close()  # owner-only; the mirror writes there through the handle
        mirror = TensorBoardSink(life.home.via())
        life.sinks = [*sinks, mirror]
    try:
        finished = train_in(life, trainer, handle_signals)
    finally:
        if mirror is not None:
            mirror.close()
    return (EXIT_FAILED if finished.status == "failed" else EXIT_OK), life.run_dir


def train_in(life: RunLife, trainer: Any, handle_signals: bool = True, **info: Any) -> Finished:
    """Train ``trainer`` inside ``life``'s run directory (``info``: more for run.json); always ends
    with a summary and closes the life (a set-up step that fails, the event log or the socket
    say, fails the run)."""
    life.standing = lambda: standing(trainer)
    if trainer.ranks.distributed:
        life.on_forced = lambda: _end_node(trainer)
    try:
        trainer.run_dir = life.run_dir
        trainer.checkpoints.folder = life.checkpoint_folder()  # saved through the run's handle
        trainer.session = life.session
        trainer.subscribe(life.emit)
        life.watch = StallWatch.of(trainer, life.emit)
        life.start(
            trainer.commands,
            stop=trainer.request_stop,
            terminate=lambda: _terminated(trainer, life),
            handle_signals=handle_signals,
            device=getattr(trainer, "device", None),
            **info,
        )
        finished = trainer.loop()
        life.summarize(finished, trainer.last_metrics, trainer.opt.epochs, trainer.tested)
        return finished
    except (
        Exception,
        SystemExit,
    ) as e:  # set-up inside the run directory failed (event log, socket, signals, announcement)
        return life.fail_setup(e, also=[s for s in trainer.sinks if s != life.emit])
    finally:
        if life.emit in trainer.sinks:  # a Trainer run again later must not write into a closed log
            trainer.sinks.remove(life.emit)
        trainer.checkpoints.folder = None  # nor through a closed handle
        life.close()


def standing(trainer: Any) -> Standing:
    """Where ``trainer``'s loop stands, for an ending written from outside it."""
    return Standing(
        trainer.epoch,
        trainer.step,
        trainer.best.best,
        trainer.best.best_epoch,
        trainer.opt.monitor,
        trainer.opt.epochs,
        trainer.last_metrics,
    )


def _end_node(trainer: Any) -> None:
    """A forced end of a distributed run: this node's other ranks and its launcher go too."""
    sys.stdout.flush()
    trainer.ranks.kill_local_peers()
    launcher = int(os.environ.get(LAUNCHER_ENV, "0") or 0)
    if launcher:
        os.kill(launcher, signal.SIGKILL)


def _terminated(trainer: Any, life: RunLife | None) -> None:
    """SIGTERM. Alone, or from a launcher ending the run: stop gracefully. From a launcher ending
    the other ranks because one failed: record that rank's error (rank 0) and go at once, since
    a collective with the failed rank would never return."""
    peer = trainer.ranks.peer_failure() if trainer.ranks.distributed else None
    if peer is None:
        trainer.request_stop("terminated (SIGTERM)")
        return
    if not trainer.ending.acquire(blocking=False):  # the loop is telling that failure: let it finish
        return
    try:
        if life is not None:  # rank 0: the failed rank's error, in the log, on the terminal, in the summary
            rank = f"rank {peer['rank']}"
            failed = Failed(
                f"{rank}: {peer['error']}",
                f"{rank}, {peer['where']}",
                peer.get("traceback", ""),
                peer.get("user_frames", []),
            )
            s = standing(trainer)
            wall = time.time() - life.started
            finished = Finished("failed", f"{rank} failed", s.epoch, s.step, s.best, s.best_epoch, s.monitor, wall)
            life.record_end(finished, s.metrics, s.epochs, list(trainer.sinks) or [life.emit], failed)
            sys.stdout.flush()
    finally:
        end_children()
        os._exit(EXIT_FAILED)


# ---- from Python ---------------------------------------------------------------------------
def run_spec(spec_path: str | Path, overrides: list[str] | None = None, sinks: Iterable[Sink] = ()) -> tuple[int, Path]:
    """Python entry point: train a spec file as ``tuiloop run --headless`` does; returns (exit status, run directory)."""
    return execute(load_spec(spec_path, overrides), sinks=sinks)
