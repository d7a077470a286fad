"""The monitor's reader on a real run (the training process ``tuiloop run`` starts, the real
:class:`RunSource`): what it shows while the first batch is slow, and lines of the event log it
cannot use, met while the run goes on."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from conftest import write_spec
from runs_support import events, last_step, start_training_process, summary
from test_tui_screen import screen_text, wait_for

from tuiloop.rundir.control import send_command
from tuiloop.spec import load_spec
from tuiloop.tui.app import MonitorApp
from tuiloop.tui.source import RunSource


def kinds(run_dir: Path) -> list[str]:
    return [e["event"] for e in events(run_dir)]


def watch(run_dir: Path, proc, body) -> MonitorApp:  # type: ignore[no-untyped-def]
    """Run the monitor on the real run while ``body(app, pilot)`` acts; the process ends after."""

    async def main() -> MonitorApp:
        app = MonitorApp(
            RunSource(run_dir, proc), lambda cmd: send_command(run_dir, cmd), run_dir=str(run_dir), exit_on_finish=True
        )
        async with app.run_test(size=(100, 30)) as pilot:
            await body(app, pilot)
            await wait_for(pilot, lambda: not app.is_running, 60, "the monitor to close when the run ended")
        return app

    try:
        app = asyncio.run(main())
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return app


def test_a_slow_first_batch_shows_as_waiting_for_the_first_batch(workdir: Path) -> None:
    go = workdir / "go"
    run_dir, proc = start_training_process(
        load_spec(
            write_spec(
                workdir, run={"epochs": 2000}, model={"target": "tiny.py:SlowStart", "go": str(go), "delay": 0.02}
            )
        )
    )

    async def body(app: MonitorApp, pilot) -> None:  # type: ignore[no-untyped-def]
        await wait_for(
            pilot, lambda: "waiting for the first batch…" in screen_text(app), 90, "the first-batch phase on screen"
        )
        # between the start and the first steps: the run announced itself, no step is logged yet
        log = kinds(run_dir)
        assert "run_started" in log and "train_steps" not in log, log
        assert (
            app.model.started is not None and app.model.step == 0 and app.model.phase == "waiting for the first batch"
        )
        assert "epoch 1/2000 " in screen_text(
            app
        ) and "started: on cpu, 131 parameters, 2,000 epochs of 8 steps" in screen_text(app)
        go.touch()  # the first forward returns
        await wait_for(pilot, lambda: app.model.step > 0, 30, "the first steps")
        assert app.model.phase is None
        await wait_for(
            pilot, lambda: "waiting for the first batch" not in screen_text(app), 5, "the phase to leave the screen"
        )
        assert send_command(run_dir, "stop") == {"ok": True}

    app = watch(run_dir, proc, body)
    assert app.model.state == "stopped" and summary(run_dir)["status"] == "stopped"  # type: ignore[index]


def test_bad_lines_in_a_live_log_are_skipped_with_a_warning_and_the_view_goes_on(workdir: Path) -> None:
    """A line from a newer tuiloop and a line cut short (what a killed writer leaves, ended by the
    next writer's newline) appear in the log of a run that keeps training."""
    run_dir, proc = start_training_process(load_spec(write_spec(workdir, run={"epochs": 2000}, model={"delay": 0.02})))
    bad = b'{"event":"from_a_newer_tuiloop","time":1.0,"detail":"x"}\n{"event":"train_steps","epoch":1,"first_st\n'

    def warnings(app: MonitorApp) -> list[str]:
        return [e.text for e in app.model.log if "skipped a line of events.jsonl" in e.text]

    async def body(app: MonitorApp, pilot) -> None:  # type: ignore[no-untyped-def]
        await wait_for(pilot, lambda: app.model.step >= 8, 90, "a first epoch on screen")
        assert warnings(app) == []
        fd = os.open(
            run_dir / "events.jsonl", os.O_WRONLY | os.O_APPEND
        )  # as the writer appends: whole lines, one write
        try:
            os.write(fd, bad)
        finally:
            os.close(fd)
        await wait_for(pilot, lambda: len(warnings(app)) == 2, 10, "a warning for each bad line")
        await wait_for(
            pilot, lambda: "skipped a line of events.jsonl" in screen_text(app), 5, "the warning in the log panel"
        )
        unknown, torn = warnings(app)
        assert "unknown event type 'from_a_newer_tuiloop' (written by a newer tuiloop?)" in unknown
        assert "not a JSON object (a line cut short by a killed process?)" in torn
        # the reader goes on: new steps reach the model and the screen
        seen = app.model.step
        await wait_for(
            pilot,
            lambda: app.model.step >= seen + 16 and last_step(run_dir) >= seen + 16,
            30,
            "steps after the bad lines",
        )
        assert send_command(run_dir, "stop") == {"ok": True}

    app = watch(run_dir, proc, body)
    assert app.model.state == "stopped" and app.model.step == summary(run_dir)["steps"]  # type: ignore[index]
