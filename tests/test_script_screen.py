"""The monitor of ``tuiloop run SCRIPT.py`` on a script that never opens its run directory: after
the grace period it shows the script's output, says that the script logs nothing to tuiloop, and
gives the line to add."""

from __future__ import annotations

from pathlib import Path

from test_tui_screen import FakeRun, run_async, screen_text, wait_for

from tuiloop.engine.sentences import UNTRACKED_HINT
from tuiloop.tui.app import MonitorApp
from tuiloop.tui.screens import OutputScreen


@run_async
async def test_a_script_that_logs_nothing_shows_its_output_and_the_line_to_add(tmp_path: Path) -> None:
    (tmp_path / "output.log").write_text("epoch 1 loss 0.5 (printed by the script)\n")
    run = FakeRun()  # alive, and it writes no event
    app = MonitorApp(run, run.command, run_dir=str(tmp_path), untracked_after=0.3)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, OutputScreen), what="the output screen")
        await wait_for(pilot, lambda: "printed by the script" in screen_text(app), what="the script's output")
        screen = screen_text(app)
        assert "the script logs nothing to tuiloop" in screen
        assert "run = tuiloop.track()" in screen
        assert any(UNTRACKED_HINT in line.text for line in app.model.log)


@run_async
async def test_a_spec_run_or_a_tracked_script_never_shows_the_hint(tmp_path: Path) -> None:
    run = FakeRun()
    app = MonitorApp(run, run.command, run_dir=str(tmp_path))  # no grace period: not a script
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause(0.6)
        assert not isinstance(app.screen, OutputScreen)
        assert "logs nothing" not in screen_text(app)
