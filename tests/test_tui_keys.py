"""The monitor's keys beyond pause/save/stop, and its panes behind keys, on a fake run: stop after
this epoch, the learning rate halved or doubled, suspend and resume, the run's output, the epoch
table, the scrolling log, the loss plot's zoom and x axis, the keys list, small terminals."""

from __future__ import annotations

import re
from dataclasses import replace

from test_tui_screen import FakeRun, keys_handled, monitor, run_async, screen_text, settled, wait_for

from tuiloop.engine.events import (
    EarlyStopUpdate,
    Finished,
    Message,
    RunStarted,
    SettingChanged,
    SystemSample,
    TrainSteps,
    Validated,
)
from tuiloop.tui.app import MonitorApp
from tuiloop.tui.bindings import KEYS
from tuiloop.tui.screens import Confirm, EpochsScreen, KeysScreen, OutputScreen
from tuiloop.tui.scroll import ScrollLines

T0 = 1_700_000_000.0


@run_async
async def test_e_stops_after_this_epoch_then_goes_on_and_the_progress_line_says_so() -> None:
    async with monitor(epochs(3), (120, 40)) as (run, app, pilot, _):
        await pilot.press("e")
        await wait_for(pilot, lambda: run.sent == ["stop_after_epoch"], what="the command")
        assert not isinstance(app.screen, Confirm), "e does not ask: pressed again, it cancels"
        run.push(SettingChanged("stop_after_epoch", False, True, 4, 24, "command", time=T0 + 9))
        await wait_for(pilot, lambda: "stops after epoch 4" in screen_text(app), what="the progress line")
        await wait_for(
            pilot, lambda: "e Go on" in screen_text(app).splitlines()[-1], what="the key bar to offer e Go on"
        )
        await pilot.press("e")  # the view says the run is set to stop: e sends go_on, never a toggle
        await wait_for(pilot, lambda: run.sent == ["stop_after_epoch", "go_on"], what="the cancel")
        run.push(SettingChanged("stop_after_epoch", True, False, 4, 25, "command", time=T0 + 10))
        await wait_for(
            pilot, lambda: "stop after this epoch cancelled" in screen_text(app), what="the cancel in the log"
        )
        assert "stops after epoch" not in screen_text(app).splitlines()[1]


@run_async
async def test_minus_and_plus_ask_then_change_the_learning_rate() -> None:
    async with monitor(epochs(3), (120, 40)) as (run, app, pilot, _):
        await pilot.press("minus")
        await wait_for(pilot, lambda: isinstance(app.screen, Confirm), what="the question")
        assert "Halve the learning rate? (0.001 -> 0.0005)" in screen_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: run.sent == ["lr_down"], what="lr_down")
        await pilot.press("plus")
        await wait_for(pilot, lambda: isinstance(app.screen, Confirm), what="the question")
        assert "Double the learning rate?" in screen_text(app)
        await pilot.press("n")
        await wait_for(pilot, lambda: not isinstance(app.screen, Confirm), what="the question to close")
        await keys_handled(pilot, app)
        assert run.sent == ["lr_down"], "n sends nothing"
        run.push(SettingChanged("optimizer.lr", 0.001, 0.0005, 4, 24, "command lr_down", time=T0 + 9))
        await wait_for(pilot, lambda: "lr 0.0005" in screen_text(app), what="the new learning rate")
        assert re.search(r"learning rate 0\.001 -> 0\.0005 \(command lr_down, step 24\)", screen_text(app))


@run_async
async def test_p_upper_suspends_and_r_upper_resumes_in_a_new_process() -> None:
    calls = []

    def resumer() -> tuple[object, str]:
        calls.append(1)
        return "new-process", "session-2"

    async with monitor(epochs(3, session="session-1"), (120, 40), resumer=resumer, expect_session="session-1") as (
        run,
        app,
        pilot,
        _,
    ):
        assert "R Resume" not in screen_text(app)
        await pilot.press("P")
        await wait_for(pilot, lambda: isinstance(app.screen, Confirm), what="the question")
        assert "Suspend the run to disk?" in screen_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: run.sent == ["suspend"], what="suspend")
        run.push(Finished("suspended", "suspended to disk", 3, 24, 0.6, 2, "val_loss", 5.0, time=T0 + 9))
        run.is_alive = False
        await wait_for(pilot, lambda: "R Resume" in screen_text(app), what="the resume key")
        assert app.is_running and "SUSPENDED" in screen_text(app), "the monitor stays open"
        await pilot.press("R")
        await wait_for(pilot, lambda: calls and getattr(run, "followed", None) == "new-process", what="the new process")
        n = app.model.events_seen
        run.push(*epochs(1, session="session-2", start_epoch=3, start_step=24, resumed_from="checkpoints/last.pt")[:1])
        await settled(pilot, run, app, n + 1)
        assert (
            app.model.state == "running"
            and "RUNNING" in screen_text(app)
            and "resumed at epoch 4, step 24" in screen_text(app)
        )


@run_async
async def test_a_resume_that_fails_says_why_and_offers_r_again() -> None:
    def resumer() -> tuple[object, str]:
        raise RuntimeError("no checkpoint to resume from")

    async with monitor(epochs(2), (120, 40), resumer=resumer) as (run, app, pilot, _):
        run.push(Finished("suspended", "suspended to disk", 2, 16, 0.6, 2, "val_loss", 5.0, time=T0 + 9))
        run.is_alive = False
        await wait_for(pilot, lambda: "R Resume" in screen_text(app))
        await pilot.press("R")
        await wait_for(pilot, lambda: "could not resume: no checkpoint to resume from" in screen_text(app))
        assert "R Resume" in screen_text(app)


@run_async
async def test_o_shows_the_runs_own_output_and_follows_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    long = "UserWarning: " + "a long warning from the user's forward " * 6 + "END-OF-WARNING"
    (tmp_path / "output.log").write_text(
        f"hello from the user's code\n\x1b[31mred warning\x1b[0m\nprogress 10%\rprogress 100%\n{long}\n"
    )
    (tmp_path / "ranks").mkdir()
    (tmp_path / "ranks" / "rank-1.log").write_text("rank one says hi\n")
    async with monitor(epochs(2, run_dir=str(tmp_path), world_size=2, backend="gloo"), (120, 40)) as (
        run,
        app,
        pilot,
        _,
    ):
        await pilot.press("o")
        await wait_for(pilot, lambda: "hello from the user's code" in screen_text(app), what="output.log")
        text = screen_text(app)
        assert isinstance(app.screen, OutputScreen) and "Output (stdout, stderr, other ranks)" in text
        assert "red warning" in text and "\x1b" not in text and "progress 100%" in text and "progress 10%" not in text
        assert "[rank 1] rank one says hi" in text
        assert "UserWarning: a long warning" in text and "END-OF-WARNING" in text, "a long line wraps, whole"
        with open(tmp_path / "output.log", "a") as f:
            f.write("a line printed later\n")
        await wait_for(pilot, lambda: "a line printed later" in screen_text(app), what="the new line")
        await pilot.press("p")  # the run's keys work from here too
        await wait_for(pilot, lambda: run.sent == ["pause"])
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, OutputScreen))
        assert "Metrics" in screen_text(app)


@run_async
async def test_o_on_a_run_that_prints_to_its_own_terminal_says_its_output_is_not_kept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with monitor(epochs(2, run_dir=str(tmp_path)), (120, 40)) as (
        run,
        app,
        pilot,
        _,
    ):  # headless, tracked: no output.log
        await pilot.press("o")
        await wait_for(
            pilot,
            lambda: "not kept: this run prints to the terminal that started it" in screen_text(app),
            what="the note",
        )


@run_async
async def test_t_shows_every_validation_and_takes_new_ones() -> None:
    async with monitor(epochs(4), (120, 40)) as (run, app, pilot, _):
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, EpochsScreen))
        rows = [line for line in screen_text(app).splitlines() if re.match(r"\s+\d+\s+\d+\s", line)]
        assert len(rows) == 4 and "★" in rows[0] and "★" in rows[1] and "★" not in rows[2]
        assert re.search(r"epoch\s+step\s+wall\s+train_loss\s+val_loss\s+val_acc", screen_text(app))
        run.push(Validated(5, 40, {"train_loss": 0.4, "val_loss": 0.5, "val_acc": 0.75}, True, 0.1, time=T0 + 20))
        await wait_for(pilot, lambda: re.search(r"\s5\s+40\s.*0\.7500\s+★", screen_text(app)), what="the new row")
        await pilot.press("t")
        await wait_for(pilot, lambda: not isinstance(app.screen, EpochsScreen))


@run_async
async def test_the_log_pane_scrolls_back_wraps_long_lines_and_follows_at_the_bottom() -> None:
    lines = [Message("info", f"line number {i}", time=T0 + 5) for i in range(40)]  # pages of 6 lines
    long = "a very long warning " * 12 + "THE END"
    async with monitor([*epochs(2), *lines, Message("warning", long, time=T0 + 6)], (100, 30)) as (run, app, pilot, _):
        log = app.query_one("#log", ScrollLines)
        text = screen_text(app)
        assert "THE END" in text and "…" not in text, "a long line wraps, whole"
        assert "line number 10 " not in text + " "
        for _ in range(20):  # a page at a time (each press redraws: pressing on at the top is slow)
            if "started: multiclass" in screen_text(app):
                break
            await pilot.press("pageup")
        await wait_for(pilot, lambda: "started: multiclass" in screen_text(app), what="the run's first line")
        assert "started: multiclass" in screen_text(app) and not log.follow, "back to the run's first line"
        await pilot.press("down")
        await pilot.press("down")
        await wait_for(pilot, lambda: "started: multiclass" not in screen_text(app), what="two lines down")
        assert "started: multiclass" not in screen_text(app)
        await pilot.press("home")
        await wait_for(pilot, lambda: "started: multiclass" in screen_text(app), what="home")
        seen = app.model.events_seen
        run.push(Message("info", "news while scrolled up", time=T0 + 7))
        await settled(pilot, run, app, seen + 1)
        assert "started: multiclass" in screen_text(app), "new lines do not yank the view"
        await pilot.press("end")
        await wait_for(pilot, lambda: "news while scrolled up" in screen_text(app))
        run.push(Message("info", "and the next one", time=T0 + 8))
        await wait_for(pilot, lambda: "and the next one" in screen_text(app), what="following again")


@run_async
async def test_z_zooms_x_changes_the_x_axis_r_and_l_change_the_loss_plot() -> None:
    async with monitor(epochs(6), (120, 40)) as (run, app, pilot, _):
        assert app.view.zoom == "all" and app.view.x_axis == "epochs"
        await pilot.press("z")
        await wait_for(pilot, lambda: "zoom: last 10%" in screen_text(app))
        await pilot.press("z")
        await wait_for(pilot, lambda: "zoom: epoch" in screen_text(app))
        await pilot.press("z")
        await wait_for(pilot, lambda: "zoom:" not in screen_text(app))
        await pilot.press("x")
        await wait_for(pilot, lambda: app.view.x_axis == "steps")
        await wait_for(pilot, lambda: re.search(r"\s10\s+20\s+30\s+40\s", screen_text(app)), what="step ticks")
        await pilot.press("x")
        await wait_for(pilot, lambda: app.view.x_axis == "time")
        await pilot.press("l")
        await wait_for(pilot, lambda: "log y" in screen_text(app))
        assert app.view.show_raw and "┃ min-max" in screen_text(app)
        await pilot.press("r")
        await wait_for(pilot, lambda: "┃ min-max" not in screen_text(app), what="the band hidden")
        await pilot.press("r")
        await wait_for(pilot, lambda: "┃ min-max" in screen_text(app), what="the band back")


@run_async
async def test_question_mark_lists_every_key() -> None:
    async with monitor(epochs(2), (120, 40)) as (run, app, pilot, _):
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, KeysScreen))
        text = screen_text(app)
        listed_rows = [(row.keys, row.help) for row in KEYS if row.keys]
        for key, what in listed_rows:
            assert key in text and what.split()[0] in text
        shown = {b.key_display or b.key for b in MonitorApp.BINDINGS if b.show}
        listed = " ".join(key for key, _ in listed_rows)
        assert all(key in listed for key in shown), shown
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, KeysScreen))


@run_async
async def test_a_read_only_view_offers_none_of_the_keys_that_change_the_run() -> None:
    async with monitor(
        [*epochs(2), Finished("suspended", "suspended to disk", 2, 16, 0.6, 2, "val_loss", 5.0, time=T0 + 9)],
        (120, 40),
        read_only=True,
    ) as (run, app, pilot, _):
        for key in ("e", "minus", "plus", "P", "R"):
            await pilot.press(key)
        await keys_handled(pilot, app)
        assert run.sent == [] and not isinstance(app.screen, Confirm)
        bar = screen_text(app).splitlines()[-1]
        assert "Stop@epoch" not in bar and "Suspend" not in bar and "Resume" not in bar and "Leave" in bar
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, KeysScreen))
        assert "dimmed: not for this run now" in screen_text(app), "the list says which keys cannot act here"


@run_async
async def test_a_tracked_loop_is_offered_only_the_keys_it_obeys() -> None:
    """tuiloop.track's loop obeys pause, save and stop; e, -, + and P would do nothing there."""
    from tuiloop.runner.track import OBEYED

    async with monitor(epochs(2, commands=list(OBEYED)), (120, 40)) as (run, app, pilot, _):
        for key in ("e", "minus", "plus", "P"):
            await pilot.press(key)
        await keys_handled(pilot, app)
        assert run.sent == [] and not isinstance(app.screen, Confirm)
        bar = screen_text(app).splitlines()[-1]
        assert "Stop@epoch" not in bar and "LR" not in bar and "Suspend" not in bar
        assert "Pause" in bar and "Save" in bar and "Stop" in bar
        await pilot.press("p")
        await wait_for(pilot, lambda: run.sent == ["pause"], what="the pause")


@run_async
async def test_small_terminals_drop_panels_but_never_cut_a_number() -> None:
    events = [replace(e, patience=1000) if isinstance(e, (RunStarted, EarlyStopUpdate)) else e for e in epochs(3)]
    async with monitor(events, (60, 16)) as (run, app, pilot, screen):
        assert "1/1000" in screen, screen
        assert not app.query_one("#lr-box").region.height, "the learning-rate plot gives way first"
    async with monitor(events, (80, 24)) as (run, app, pilot, screen):
        assert "1/1000" in screen and "0.7000" in screen


@run_async
async def test_the_system_pane_shows_each_gpu_and_the_process() -> None:
    gib = 1 << 30
    gpus = [
        {
            "index": i,
            "name": "NVIDIA H100 80GB HBM3",
            "util": 97 - i,
            "mem_used": (61 + i) * gib,
            "mem_total": 80 * gib,
            "temp": 64,
            "power_w": 312.0,
        }
        for i in range(2)
    ]
    sample = SystemSample(12.0, 10 * gib, 24 * gib, 2 * gib, 101.0, 40 * gib, gpus, time=T0 + 3)
    async with monitor([*epochs(2), sample], (120, 40)) as (run, app, pilot, screen):
        lines = [line for line in screen.splitlines() if "GPU" in line]
        assert len(lines) == 2 and "97%" in lines[0] and "96%" in lines[1] and "64°C" in lines[0], screen
        assert (
            "61.0/80.0 GiB" in lines[0]
            and "torch peak 40.0 GiB" in screen
            and "CPU 12%  RAM 10.0/24.0 GiB  RSS 2.0 GiB" in screen
        )


@run_async
async def test_a_tracked_loop_without_epochs_or_lr_shows_no_zeros_or_nan() -> None:
    async with monitor(
        epochs(0, epochs=0, steps_per_epoch=None, num_params=0, problem="other", device_name="user loop"), (120, 40)
    ) as (run, app, pilot, _):
        n = app.model.events_seen
        run.push(TrainSteps(1, 1, [1.0, 0.9], 2, float("nan"), 0.0, time=T0 + 1))
        await settled(pilot, run, app, n + 1)
        text = screen_text(app)
        assert "epoch 1" in text and "/0" not in text and "nan" not in text and "0 param" not in text


def epochs(n: int, **start: object) -> list:
    from test_tui_screen import epochs as make

    return make(n, **start)


assert FakeRun  # the fake run these tests drive is test_tui_screen's
