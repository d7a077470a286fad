"""The monitor on a real run: a training process started as ``tuiloop run`` starts it, steered
by key presses in ``App.run_test()``, checked against its event log, checkpoints and summary."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conftest import load_ckpt, only_run, run_cli, write_spec
from runs_support import events, last_step, resume_training_process, start_training_process, summary
from test_tui_screen import screen_text, wait_for

from tuiloop.rundir.control import send_command
from tuiloop.runner.spec_run import load_run_spec
from tuiloop.spec import load_spec
from tuiloop.spec.load import apply_override, validate
from tuiloop.tui.app import MonitorApp
from tuiloop.tui.source import RunSource

# 8 steps of 20 ms per epoch, far more epochs than the test waits for: it ends when told to.
LONG = dict(run={"epochs": 2000}, model={"delay": 0.02})


def states(run_dir: Path) -> list[str]:
    return [e["state"] for e in events(run_dir) if e["event"] == "state"]


async def steer(run_dir: Path, proc) -> MonitorApp:  # type: ignore[no-untyped-def]
    app = MonitorApp(RunSource(run_dir, proc), lambda cmd: send_command(run_dir, cmd), run_dir=str(run_dir))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(
            pilot, lambda: last_step(run_dir) >= 16 and app.model.step >= 16, 90, "the run to train two epochs"
        )
        await wait_for(pilot, lambda: "RUNNING" in screen_text(app), 5, "RUNNING on screen (the next frame)")

        # p pauses: the loop waits at a step boundary and no step is logged while paused
        await pilot.press("p")
        await wait_for(pilot, lambda: states(run_dir)[-1:] == ["paused"], 20, "the paused state in the log")
        held = last_step(run_dir)
        await pilot.pause(1.0)  # a span in which no step may come: the stillness is what is checked
        assert last_step(run_dir) == held, "steps advanced while paused"
        await wait_for(pilot, lambda: "PAUSED" in screen_text(app), 5, "PAUSED on screen")

        # p again resumes
        await pilot.press("p")
        await wait_for(pilot, lambda: states(run_dir)[-1:] == ["running"], 20, "the running state in the log")
        await wait_for(pilot, lambda: last_step(run_dir) > held + 3, 20, "steps after resuming")

        # s saves a checkpoint now: the file, the event, the line in the log panel
        await pilot.press("s")
        manual = []
        await wait_for(
            pilot,
            lambda: (
                manual.extend(e for e in events(run_dir) if e["event"] == "checkpoint" and e["tag"] == "manual")
                or manual
            ),
            20,
            "a manual checkpoint event",
        )
        assert (run_dir / manual[0]["path"]).is_file()
        # (the log panel shows its newest lines; at this speed routine saves can scroll it past before a capture)
        name = Path(manual[0]["path"]).name
        await wait_for(
            pilot, lambda: any(name in entry.text for entry in app.model.log), 5, "the manual save in the log"
        )

        # q asks, y stops: the run finishes its step, saves last.pt, writes its summary; the monitor closes
        await pilot.press("q")
        await wait_for(pilot, lambda: "Stop the run?" in screen_text(app), 5, "the stop dialog")
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.is_running, 60, "the monitor to close after the run stopped")
    return app


def test_keys_pause_resume_save_and_stop_a_real_run(workdir: Path) -> None:
    spec = load_spec(write_spec(workdir, **LONG))
    run_dir, proc = start_training_process(spec)
    try:
        app = asyncio.run(steer(run_dir, proc))
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    s = summary(run_dir)
    assert s is not None and s["status"] == "stopped"
    last = run_dir / "checkpoints" / "last.pt"
    assert last.is_file() and load_ckpt(last)["step"] == s["steps"]
    assert app.model.state == "stopped" and app.model.exit_status() == 0 and app.return_value == "left"
    assert app.model.step == s["steps"]  # the screen saw every step the run took


def test_a_resumed_run_is_followed_to_its_new_end(workdir: Path) -> None:
    """``tuiloop run --resume``: the log starts with the first session's ending; the view goes on."""
    spec_path = write_spec(workdir, run={"epochs": 2})
    assert run_cli("run", spec_path, "--headless", cwd=workdir).returncode == 0
    run_dir = only_run(workdir / "runs").resolve()
    spec = load_run_spec(run_dir)
    apply_override(spec.raw, "run.epochs=4")
    proc = resume_training_process(run_dir, validate(spec.raw, spec.where, spec.base_dir, spec.path))

    async def watch() -> MonitorApp:
        app = MonitorApp(
            RunSource(run_dir, proc),
            lambda cmd: send_command(run_dir, cmd),
            run_dir=str(run_dir),
            exit_on_finish=True,
            expect_session="resumed-session",
        )
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: not app.is_running, 90, "the resumed run to finish")
        return app

    try:
        app = asyncio.run(watch())
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    m = app.model
    assert m.state == "completed" and m.finished is not None and m.finished.epochs_done == 4
    assert m.step == 4 * 8 and len(m.train) == 4 * 8  # both sessions' steps, each once
    assert any("an earlier session ended" in e.text for e in m.log)


def test_a_run_that_crashes_shows_its_error_and_exits_1(workdir: Path) -> None:
    (workdir / "crashy.py").write_text(
        "import torch\n"
        "class Crashy(torch.nn.Linear):\n"
        "    calls = 0\n"
        "    def forward(self, x):\n"
        "        Crashy.calls += 1\n"
        "        if Crashy.calls == 20:\n"
        "            raise ValueError('a bad batch on purpose')\n"
        "        return super().forward(x)\n"
    )
    spec = load_spec(write_spec(workdir, run={"epochs": 50}, model={"target": "crashy.py:Crashy", "hidden": None}))
    started = time.time()
    run_dir, proc = start_training_process(spec)

    async def watch() -> tuple[MonitorApp, str]:
        app = MonitorApp(RunSource(run_dir, proc), lambda cmd: send_command(run_dir, cmd), run_dir=str(run_dir))
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: "FAILED" in screen_text(app), 90, "FAILED on screen")
            await wait_for(
                pilot,
                lambda: "raise ValueError('a bad batch on purpose')" in screen_text(app),
                10,
                "the error panel down to the line that raised",
            )
            screen = screen_text(app)
            await pilot.press("q")
            await wait_for(pilot, lambda: not app.is_running, 10, "q to leave")
        return app, screen

    try:
        app, screen = asyncio.run(watch())
        assert proc.wait(timeout=30) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "ValueError: a bad batch on purpose" in screen
    assert "crashy.py:7 in forward" in screen  # where it happened, in the user's file
    assert "raise ValueError('a bad batch on purpose')" in screen
    assert app.model.exit_status() == 1
    assert (run_dir / "checkpoints" / "last.pt").is_file()  # what could be saved was saved
    assert started <= summary(run_dir)["ended"] <= time.time()  # written by this run, when it failed
