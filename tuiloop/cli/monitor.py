"""The monitor in this terminal for ``tuiloop run``, ``attach`` and ``show``: run it, then tell how the run stands."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tuiloop.engine.exits import EXIT_FORCED
from tuiloop.rundir.control import send_command
from tuiloop.rundir.state import run_state
from tuiloop.runner.training_process import resume_in_background
from tuiloop.tui.app import MonitorApp
from tuiloop.tui.source import RunSource


def monitor_run(
    run_dir: Path,
    proc: subprocess.Popen | None,
    exit_on_finish: bool = False,
    read_only: bool = False,
    attached: bool = False,
    session: str | None = None,
    commander: Any = None,
    untracked_after: float | None = None,
) -> int:
    """Run the monitor on a run directory until the user leaves; return the exit status.

    0: the run completed, early-stopped or was stopped, or the user left it running;
    1: it failed or its process died; 2: it failed at setup; 130: the user forced it to exit.
    After the terminal is restored, a failure's error and traceback go to stderr and a one-line
    summary with the run directory to stdout.
    """
    run_dir = Path(run_dir)
    app = MonitorApp(
        RunSource(run_dir, proc),
        None if read_only else (commander or (lambda cmd, **fields: send_command(run_dir, cmd, **fields))),
        run_dir=str(run_dir),
        read_only=read_only,
        exit_on_finish=exit_on_finish,
        expect_session=session or _live_session(run_dir),
        attached=attached,
        resumer=None if read_only else (lambda: resume_in_background(run_dir)),
        untracked_after=untracked_after,
    )
    how = app.run()
    proc = app.source.proc  # a new one if R resumed the run
    model = app.model
    if app.return_code:  # the monitor itself broke (Textual printed why); the run is unaffected
        print(f"tuiloop: the monitor stopped unexpectedly; the run goes on: tuiloop attach {run_dir}", file=sys.stderr)
        return app.return_code
    _wait_for_the_end(run_dir, proc, model.over or how == "forced")
    if model.failure is not None:
        f = model.failure
        print(f"tuiloop: error: {f.error}\n  where: {f.where}", file=sys.stderr)
        if f.traceback:
            print(f.traceback.rstrip(), file=sys.stderr)
    elif model.state == "failed" and model.last_error:
        print(f"tuiloop: error: {model.last_error}", file=sys.stderr)
    if how == "forced":
        print(f"{model.run_name or 'the run'}: forced to exit without saving (second Ctrl+C); its process is gone")
        print(f"run directory: {run_dir}")
        return EXIT_FORCED
    if model.over or read_only:
        print(model.summary_line())
    else:
        print(
            f"{model.run_name or 'the run'}: left running in the background (epoch {model.epoch}, step {model.step}); watch it again with: tuiloop attach {run_dir}"
        )
        if attached and how == "detached":
            print("(in a monitor opened with attach, Ctrl+C detaches and the run goes on; q stops the run)")
    print(f"run directory: {run_dir}")
    return model.exit_status()


def _live_session(run_dir: Path) -> str | None:
    """The start of a live run this view follows (a resumed run's log also holds earlier sessions)."""
    st = run_state(run_dir)
    return (st.info.get("session") or None) if st.live else None


def _wait_for_the_end(run_dir: Path, proc: subprocess.Popen | None, over: bool) -> None:
    """Once the run has ended, let its process finish writing summary.json before we return."""
    if not over:
        return
    if proc is not None:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and run_state(run_dir).live:
        time.sleep(0.1)
