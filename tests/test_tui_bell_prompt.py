"""The monitor rings the terminal's bell when the run it shows ends, fails or stalls (not for
what its log held before it opened), and its ``:`` prompt checks KEY=VALUE settings as
``tuiloop ctl RUN set`` does before it sends them (on a fake run; the real terminal is in
tests/test_tui_prompt_tmux.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from test_tui_screen import FakeRun, epochs, keys_handled, monitor, run_async, screen_text, settled, started, wait_for

from tuiloop.engine.events import Finished, Stalled, StateChanged
from tuiloop.rundir.layout import RUN_INFO, SPEC
from tuiloop.tui.app import MonitorApp
from tuiloop.tui.prompt import SettingsPrompt


def flat(app: MonitorApp) -> str:
    """The screen's words in one line (a long message wraps)."""
    return " ".join(screen_text(app).split())


def counting_bells(app: MonitorApp) -> list[float]:
    rung: list[float] = []
    app.bell = lambda: rung.append(time.time())  # type: ignore[method-assign]
    return rung


@run_async
async def test_the_bell_rings_when_the_run_stalls_and_when_it_ends_but_not_for_history() -> None:
    async with monitor(epochs(3), (120, 40)) as (run, app, pilot, _):
        rung = counting_bells(app)
        now = time.time()
        run.push(Stalled(320.0, 300.0, 24, "tiny.py:41 in __getitem__", time=now))
        await wait_for(pilot, lambda: app.model.state == "stalled", what="the stall")
        await wait_for(pilot, lambda: len(rung) == 1, what="a bell for the stall")
        run.push(StateChanged("running", "moving again after 5:20", 24, time=now + 1))
        await wait_for(pilot, lambda: app.model.state == "running", what="running again")
        run.push(Finished("failed", "ValueError in training", 3, 25, 0.6, 2, "val_loss", 9.0, time=now + 2))
        await wait_for(pilot, lambda: app.model.over, what="the end")
        await wait_for(pilot, lambda: len(rung) == 2, what="a bell for the end")
        await pilot.pause(0.3)
        assert len(rung) == 2, "once each"


@run_async
async def test_no_bell_for_an_ending_the_log_held_when_the_monitor_opened() -> None:
    run = FakeRun()
    run.push(*epochs(2), Finished("completed", "2 epochs done", 2, 16, 0.6, 2, "val_loss", 3.0, time=1_700_000_100.0))
    app = MonitorApp(run, run.command, run_dir="/nowhere", read_only=True)
    rung = counting_bells(app)
    async with app.run_test(size=(120, 40)) as pilot:
        await settled(pilot, run, app, len(epochs(2)) + 1)
        assert app.model.over and rung == []


def live_run_dir(tmp_path: Path, obeys: list[str] | None = None) -> Path:
    """A run directory with the saved spec of a run (what the prompt checks against)."""
    run_dir = tmp_path / "tiny-mlp-20260101-120000-ab12"
    run_dir.mkdir()
    (run_dir / SPEC).write_text(
        '[run]\nname = "tiny-mlp"\nepochs = 10\n[model]\ntarget = "m.py:M"\n[data]\ntarget = "d.py:d"\n'
        '[loss]\ntarget = "CrossEntropyLoss"\n[optimizer]\ntarget = "Adam"\nlr = 0.001\n'
    )
    (run_dir / RUN_INFO).write_text('{"name": "tiny-mlp"}')
    return run_dir


@run_async
async def test_the_colon_prompt_refuses_a_bad_key_at_once_then_sends_the_checked_settings(tmp_path: Path) -> None:
    run_dir = live_run_dir(tmp_path)
    sent: list[tuple[str, dict[str, Any]]] = []
    run = FakeRun()
    run.push(*epochs(3, run_dir=str(run_dir)))
    app = MonitorApp(run, lambda cmd, **fields: sent.append((cmd, fields)), run_dir=str(run_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await settled(pilot, run, app, len(epochs(3)))
        await pilot.press("colon")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsPrompt), what="the prompt")
        await pilot.press(*"optimizer.lr=1e-4 run.epohcs=3", "enter")
        await wait_for(pilot, lambda: "Did you mean 'epochs'?" in flat(app), what="the refusal")
        assert isinstance(app.screen, SettingsPrompt) and sent == [], "nothing is sent; the prompt stays open"
        assert "set, [run] epohcs: 'epohcs' is not a key of [run]" in flat(app)
        prompt_line = app.screen.query_one("#prompt-line")
        prompt_line.value = ""  # type: ignore[attr-defined]
        await pilot.press(*"run.seed=1", "enter")
        await wait_for(pilot, lambda: "[run] seed: it cannot change while the run trains" in flat(app), what="seed")
        prompt_line.value = ""  # type: ignore[attr-defined]
        await pilot.press(*"optimizer.lr=1e-4 run.epochs=300", "enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, SettingsPrompt), what="the prompt to close")
        await keys_handled(pilot, app)
        assert sent == [("set", {"settings": {"optimizer.lr": 1e-4, "run.epochs": 300}})]
        await wait_for(pilot, lambda: "set optimizer.lr = 0.0001, run.epochs = 300" in flat(app), what="note")


@run_async
async def test_the_colon_prompt_of_a_tracked_loop_says_it_takes_no_settings(tmp_path: Path) -> None:
    run_dir = live_run_dir(tmp_path)
    sent: list[Any] = []
    run = FakeRun()
    run.push(started(run_dir=str(run_dir), commands=["pause", "resume", "save", "stop", "force"]))
    app = MonitorApp(run, lambda cmd, **fields: sent.append(cmd), run_dir=str(run_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await settled(pilot, run, app, 1)
        await pilot.press("colon", *"optimizer.lr=1e-4", "enter")
        await wait_for(pilot, lambda: "a loop of your own (tuiloop.track)" in flat(app), what="the refusal")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, SettingsPrompt), what="the prompt to close")
        assert sent == []
