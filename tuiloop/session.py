"""One run, end to end: run directory, event log, control socket, signals, summary.

Used by ``tuiloop run --headless`` (in the foreground), by the background training process
that the live monitor attaches to, and from Python (:func:`run_spec`).
"""

from __future__ import annotations

import getpass
import os
import platform
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tuiloop import rundir
from tuiloop.control import ControlServer
from tuiloop.engine.events import Event, Failed, Finished
from tuiloop.engine.sinks import JsonlSink
from tuiloop.spec import Spec, SpecError, resolve
from tuiloop.spec.dump import dump_toml

EXIT_OK, EXIT_FAILED, EXIT_SPEC, EXIT_FORCED = 0, 1, 2, 130


def versions() -> dict[str, str]:
    import torch

    from tuiloop import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "tuiloop": __version__}


def prepare_run_dir(spec: Spec, resume: Path | None = None) -> Path:
    """Create the run directory (or reuse it for ``--resume``) and write spec.toml and run.json."""
    # Absolute: the event log and run.json are read from other directories (attach, show, ls).
    if resume is not None:
        run_dir = resume.resolve()
        info = rundir.read_json(run_dir / rundir.RUN_INFO) or {}
    else:
        run_dir = rundir.create_run_dir(Path(spec.run.out_dir), spec.run.name).resolve()
        info = {"started": time.time()}
    (run_dir / rundir.SPEC).write_text(dump_toml(spec.raw), encoding="utf-8")
    info.update(
        name=spec.run.name,
        spec_path=str(spec.path.resolve()) if spec.path else None,
        spec_base_dir=str(spec.base_dir),
        host=socket.gethostname(),
        user=getpass.getuser(),
        argv=sys.argv,
        pid=0,
    )
    if resume is not None:
        info.setdefault("resumes", []).append(time.time())
        (run_dir / rundir.SUMMARY).unlink(missing_ok=True)
    rundir.write_json_atomic(run_dir / rundir.RUN_INFO, info)
    return run_dir


def load_run_spec(run_dir: Path) -> Spec:
    """The resolved spec saved in a run directory, with file targets resolved as at the start."""
    from tuiloop.spec.load import parse_spec

    info = rundir.read_json(run_dir / rundir.RUN_INFO) or {}
    base = Path(info.get("spec_base_dir") or run_dir)
    text = (run_dir / rundir.SPEC).read_text(encoding="utf-8")
    return parse_spec(text, path=run_dir / rundir.SPEC, base_dir=base)


class _Signals:
    """SIGINT/SIGTERM stop gracefully (checkpoint and summary); a second SIGINT forces exit.

    SIGHUP is ignored: a hung-up terminal must not end the run.
    """

    def __init__(self, request_stop: Callable[[str], None]) -> None:
        self.request_stop = request_stop
        self.interrupts = 0
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in ((signal.SIGINT, self._on_int), (signal.SIGTERM, self._on_term), (signal.SIGHUP, signal.SIG_IGN)):
            self.previous[sig] = signal.signal(sig, handler)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _on_int(self, signum: int, frame: Any) -> None:
        self.interrupts += 1
        if self.interrupts > 1:
            os.write(2, b"\ntuiloop: second interrupt, exiting now without saving\n")
            os._exit(EXIT_FORCED)
        os.write(2, b"\ntuiloop: interrupt: stopping after this step and saving (press Ctrl+C again to force)\n")
        self.request_stop("interrupted (SIGINT)")

    def _on_term(self, signum: int, frame: Any) -> None:
        self.request_stop("terminated (SIGTERM)")


def execute(
    spec: Spec,
    run_dir: Path | None = None,
    resume: Path | None = None,
    sinks: Iterable[Callable[[Event], None]] = (),
    handle_signals: bool = True,
) -> tuple[int, Path | None]:
    """Build and train; returns (exit status, run directory).

    Spec and build errors raise :class:`SpecError` before a run directory exists, unless
    ``run_dir`` is given (a background run), where they are recorded as a failed run.
    """
    from tuiloop.engine.build import build_trainer

    try:
        trainer = build_trainer(resolve(spec))
    except SpecError as e:
        if run_dir is None:
            raise
        _record_setup_failure(run_dir, e)
        return EXIT_SPEC, run_dir
    if run_dir is None:
        run_dir = prepare_run_dir(spec, resume)
    trainer.run_dir = run_dir
    if resume is not None:
        last = run_dir / rundir.CHECKPOINTS / "last.pt"
        if not last.is_file():
            raise SpecError(str(run_dir), "there is no checkpoints/last.pt to resume from", "Resume needs a run that saved its last state ([checkpoint] last = true).")
        trainer.resume(last)
        from tuiloop.engine.checkpoint import remove_stale_temps

        remove_stale_temps(run_dir / rundir.CHECKPOINTS)  # half-written files of a killed run

    info = rundir.read_json(run_dir / rundir.RUN_INFO) or {}
    info.update(pid=os.getpid(), pid_start=rundir.process_start(os.getpid()), versions=versions())
    rundir.write_json_atomic(run_dir / rundir.RUN_INFO, info)

    log = JsonlSink(run_dir / rundir.EVENTS)
    trainer.subscribe(log)
    for sink in sinks:
        trainer.subscribe(sink)
    server = ControlServer(run_dir / rundir.CONTROL, trainer.commands).start()
    signals = _Signals(trainer.request_stop)
    if handle_signals:
        signals.install()
    started = time.time()
    try:
        finished = trainer.run()
        write_summary(run_dir, finished, trainer.last_metrics, info, started)
    finally:
        server.close()
        log.close()
        signals.restore()
    return (EXIT_FAILED if finished.status == "failed" else EXIT_OK), run_dir


def write_summary(run_dir: Path, f: Finished, metrics: dict[str, float], info: dict[str, Any], started: float) -> None:
    rundir.write_json_atomic(
        run_dir / rundir.SUMMARY,
        {
            "status": f.status,
            "reason": f.reason,
            "epochs_done": f.epochs_done,
            "steps": f.step,
            "monitor": f.monitor,
            "best_value": f.best_value,
            "best_epoch": f.best_epoch,
            "final_metrics": metrics,
            "wall_time_s": f.wall_time_s,
            "started": info.get("started", started),
            "ended": time.time(),
            "versions": info.get("versions") or versions(),
        },
    )


def _record_setup_failure(run_dir: Path, error: SpecError) -> None:
    """A background run whose spec failed to build: say so in its log and summary."""
    with open(run_dir / rundir.EVENTS, "a", encoding="utf-8") as f:
        f.write(Failed(str(error), "setup", "").to_json() + "\n")
        f.write(Finished("failed", "setup error", 0, 0, None, None, None, 0.0).to_json() + "\n")
    info = rundir.read_json(run_dir / rundir.RUN_INFO) or {}
    write_summary(run_dir, Finished("failed", "setup error", 0, 0, None, None, None, 0.0), {}, info, time.time())


def run_spec(spec_path: str | Path, overrides: list[str] | None = None, sinks: Iterable[Callable[[Event], None]] = ()) -> tuple[int, Path | None]:
    """Python entry point: train a spec file headless; returns (exit status, run directory)."""
    from tuiloop.spec import load_spec

    return execute(load_spec(spec_path, overrides), sinks=sinks, handle_signals=False)
