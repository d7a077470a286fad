"""Pause and resume are commands of their own, not a toggle: ``p`` sends the one the monitor's
view of the run calls for, so a pause retried after it timed out on a frozen run stays a pause."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from conftest import write_spec
from runs_support import events, freeze, kill_run, last_step, run_pid, start_training_process, summary
from test_tui_screen import T0, epochs, keys_handled, monitor, run_async, screen_text, wait_for

from tuiloop.engine.events import StateChanged
from tuiloop.rundir.control import send_command
from tuiloop.spec import load_spec
from tuiloop.tui.app import MonitorApp
from tuiloop.tui.source import RunSource


@run_async
async def test_p_sends_pause_until_the_run_says_paused_then_resume() -> None:
    async with monitor(epochs(2), (120, 30)) as (run, app, pilot, screen):
        assert "p Pause" in screen.splitlines()[-1]
        await pilot.press("p")
        await keys_handled(pilot, app)
        await pilot.press("p")  # the run has not said it paused yet: still a pause
        await keys_handled(pilot, app)
        assert run.sent == ["pause", "pause"]
        run.push(StateChanged("paused", time=T0 + 10))
        await wait_for(pilot, lambda: "p Resume" in screen_text(app).splitlines()[-1], what="p Resume in the bar")
        await pilot.press("p")
        await wait_for(pilot, lambda: run.sent == ["pause", "pause", "resume"], what="the resume")
        run.push(StateChanged("running", time=T0 + 11))
        await wait_for(pilot, lambda: "p Pause" in screen_text(app).splitlines()[-1], what="p Pause again")


def states(run_dir: Path) -> list[str]:
    return [e["state"] for e in events(run_dir) if e["event"] == "state"]


def test_a_pause_pressed_twice_on_a_frozen_run_leaves_it_paused(workdir: Path) -> None:
    """The training process is stopped (SIGSTOP): ``p`` times out and the user presses it again.
    Both pauses arrive once the process goes on, and the run stays paused."""
    spec = load_spec(write_spec(workdir, run={"epochs": 2000}, model={"delay": 0.02}))
    run_dir, proc = start_training_process(spec)

    async def press_p_twice_while_frozen() -> None:
        app = MonitorApp(
            RunSource(run_dir, proc), lambda cmd: send_command(run_dir, cmd, timeout=0.5), run_dir=str(run_dir)
        )
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: last_step(run_dir) >= 8 and app.model.step >= 8, 90, "the first epoch")
            trainer = run_pid(run_dir)  # the child of the watcher that proc is
            assert trainer, "the run's process"
            freeze(trainer)
            try:
                for n in (1, 2):
                    await pilot.press("p")
                    await wait_for(
                        pilot,
                        lambda: sum("pause: " in e.text and "within 0.5s" in e.text for e in app.model.log) == n,  # noqa: B023
                        10,
                        f"timed-out pause number {n} in the log",
                    )
            finally:
                os.kill(trainer, signal.SIGCONT)
            await wait_for(pilot, lambda: states(run_dir)[-1:] == ["paused"], 20, "the run to pause")
            held = last_step(run_dir)
            # a save, sent after both pauses, is obeyed while paused: by then both pauses were taken
            send_command(run_dir, "save")
            await wait_for(
                pilot,
                lambda: any(e["event"] == "checkpoint" and e["tag"] == "manual" for e in events(run_dir)),
                20,
                "the save made while paused",
            )
            assert states(run_dir) == ["paused"] and last_step(run_dir) == held
            await wait_for(pilot, lambda: "p Resume" in screen_text(app).splitlines()[-1], 5, "p Resume in the bar")
            send_command(run_dir, "stop")
            await wait_for(pilot, lambda: app.model.over, 60, "the run to stop")

    try:
        asyncio.run(press_p_twice_while_frozen())
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            trainer = run_pid(run_dir)
            if trainer:
                os.kill(trainer, signal.SIGCONT)
            kill_run(run_dir)
            proc.kill()
            proc.wait()
    assert summary(run_dir)["status"] == "stopped"
