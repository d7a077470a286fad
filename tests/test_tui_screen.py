"""The monitor's screen and keys with a fake run: events the test writes, commands it records.

The real engine is not the point here (tests/test_tui_live.py drives a real run); the layout,
what each panel says, and what each key sends are.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable

import pytest

from tuiloop.engine.events import (
    CheckpointSaved,
    EarlyStopUpdate,
    Event,
    Failed,
    Finished,
    LRChanged,
    Message,
    RunStarted,
    Starting,
    StateChanged,
    TrainSteps,
    Validated,
)
from tuiloop.rundir.control import ControlError
from tuiloop.tui.app import MonitorApp
from tuiloop.tui.plot import PlotView
from tuiloop.tui.screens import Confirm

T0 = 1_700_000_000.0


def run_async(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test body in its own event loop (no pytest plugin needed)."""

    @functools.wraps(test)
    def wrapper(*args: object, **kwargs: object) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


class FakeRun:
    """An event source and command sink in one: what the 'run' wrote, and what it was sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Event] = []
        self.is_alive = True
        self.code: int | None = None
        self.sent: list[str] = []
        self.refuse: str | None = None
        self.killed = False
        self.skipped: list[str] = []
        self.asked_exit_code = False
        self.alive_checks = 0

    def push(self, *events: Event) -> None:
        with self._lock:
            self._pending.extend(events)

    def poll(self) -> list[Event]:
        with self._lock:
            out, self._pending = self._pending, []
        return out

    def problems(self) -> list[str]:
        with self._lock:
            out, self.skipped = self.skipped, []
        return out

    def alive(self) -> bool:
        self.alive_checks += 1
        return self.is_alive

    def exit_code(self) -> int | None:
        self.asked_exit_code = True  # the monitor asks once it saw the process gone
        return self.code

    def follow(self, proc: object) -> None:  # a resumed run's new process
        self.followed = proc
        self.is_alive = True

    def kill(self) -> bool:
        self.killed = True
        self.is_alive = False
        return True

    def command(self, cmd: str) -> dict:
        if self.refuse:
            raise ControlError(self.refuse)
        self.sent.append(cmd)
        return {"ok": True}


def started(**kw: object) -> RunStarted:
    fields: dict = dict(
        run_name="tiny-mlp",
        run_dir="/home/me/runs/tiny-mlp-20260101-120000-ab12",
        device="cpu",
        device_name="cpu",
        epochs=10,
        steps_per_epoch=8,
        batch_size=16,
        train_size=120,
        val_size=40,
        problem="multiclass",
        metrics=["train_loss", "val_loss", "val_acc"],
        monitor="val_loss",
        mode="min",
        patience=3,
        num_params=1234,
        time=T0,
    )
    return RunStarted(**{**fields, **kw})


def epochs(n: int, **start: object) -> list[Event]:
    """``n`` epochs of a run that improves twice, then stalls (the early-stopping counter rises)."""
    out: list[Event] = [started(**start)]
    t = T0
    best = None
    for e in range(1, n + 1):
        first = (e - 1) * 8 + 1
        out.append(TrainSteps(e, first, [2.0 / (first + i) for i in range(8)], 8, 0.01, 2048.0, time=t + 1))
        val = [0.9, 0.6, 0.7, 0.65, 0.8][(e - 1) % 5]
        is_best = best is None or val < best
        best = val if is_best else best
        out.append(
            Validated(
                e, first + 7, {"train_loss": 0.5, "val_loss": val, "val_acc": 1 - val / 2}, is_best, 0.1, time=t + 1.1
            )
        )
        out.append(EarlyStopUpdate(e, "val_loss", val, best, 0 if is_best else e - 2, 3, False, time=t + 1.1))
        if is_best:
            out.append(CheckpointSaved("best", "checkpoints/best.pt", e, first + 7, val, "val_loss", time=t + 1.2))
        out.append(CheckpointSaved("last", "checkpoints/last.pt", e, first + 7, val, "val_loss", time=t + 1.2))
        t += 1.2
    out.append(LRChanged(n, n * 8, 0.001, 0.01, time=t))
    out.append(Message("warning", "targets look like one-hot rows", time=t))
    return out


def screen_text(app: MonitorApp) -> str:
    """What the terminal shows now, as plain lines."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def wait_for(pilot, predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}; screen:\n{screen_text(pilot.app)}")
        await pilot.pause(0.05)


async def settled(pilot, run: FakeRun, app: MonitorApp, n_events: int) -> str:  # type: ignore[no-untyped-def]
    """Until the app took ``n_events`` and drew a frame after that; returns the screen."""
    await wait_for(
        pilot,
        lambda: app.model.events_seen >= n_events and app._drawn_version == app.model.version,
        what=f"a frame of {n_events} events",
    )
    await pilot.pause()  # until idle: what the frame changed is laid out
    return screen_text(app)


async def keys_handled(pilot, app: MonitorApp) -> None:  # type: ignore[no-untyped-def]
    """Until the keys pressed so far have acted, and every command they started was delivered or
    refused: after this, a key that sent nothing will not send later."""
    await pilot.pause()  # until idle: the key events and their actions ran
    commands = [w for w in app.workers if w.group == "commands"]
    if commands:  # (an empty list would wait for every worker, the reader that never ends among them)
        await app.workers.wait_for_complete(commands)


async def resized(pilot, app: MonitorApp, width: int, height: int) -> str:  # type: ignore[no-untyped-def]
    """Resize the terminal, until the screen is laid out at the new size, the loss plot at its new
    size too (where it is shown); returns the screen."""
    loss = app.query_one("#loss", PlotView)
    before = loss.content_size
    await pilot.resize_terminal(width, height)
    await wait_for(
        pilot,
        lambda: (
            len(screen_text(app).splitlines()) == height and (not loss.region.height or loss.content_size != before)
        ),
        what=f"the screen at {width}x{height}",
    )
    await pilot.pause()  # until idle: the plot drawn at its new size is on the screen
    return screen_text(app)


def make_app(run: FakeRun, **kw) -> MonitorApp:  # type: ignore[no-untyped-def]
    return MonitorApp(run, run.command, run_dir="/home/me/runs/tiny-mlp-20260101-120000-ab12", **kw)


@contextlib.asynccontextmanager
async def monitor(events: list[Event], size: tuple[int, int], **kw):  # type: ignore[no-untyped-def]
    """A monitor on a fake run that wrote ``events``, once it has drawn them: (run, app, pilot, screen)."""
    run = FakeRun()
    run.push(*events)
    app = make_app(run, **kw)
    async with app.run_test(size=size) as pilot:
        yield run, app, pilot, await settled(pilot, run, app, len(events))


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
@run_async
async def test_the_main_layout_shows_every_panel(size: tuple[int, int]) -> None:
    async with monitor(epochs(4), size) as (_, _, _, screen):
        lines = screen.splitlines()
        assert len(lines) == size[1] and all(len(ln) <= size[0] for ln in lines)
        for needle in (
            "RUNNING",
            "tiny-mlp",
            "epoch 4/10",
            "step 8/8",
            "ETA",
            "samples/s",
            "run dir",  # progress
            "Loss",
            "train",
            "val 0.6500",
            "best 0.6000 (ep 2)",  # the plot's legend
            "Metrics",
            "val_acc",
            "0.7000",  # metrics and bests
            "Early stopping",
            "2/3",  # the counter
            "Learning rate",
            "lr 0.001",
            "Log",
            "saved best",
            "targets look like one-hot rows",
            "p Pause",
            "s Save",
            "q Stop",
            "d Detach",
        ):  # footer keys
            assert needle in screen, f"{needle!r} not on the {size} screen:\n{screen}"
        assert "◆" in screen  # the best point is marked in the plot


@run_async
async def test_resizing_redraws_the_plots_at_the_new_size() -> None:
    async with monitor(epochs(5), (160, 48)) as (run, app, pilot, screen):
        loss = app.query_one("#loss", PlotView)
        wide = loss.content_size.width
        narrow = await resized(pilot, app, 80, 24)
        assert loss.content_size.width < wide
        large = await resized(pilot, app, 200, 60)
        tiny = (await resized(pilot, app, 44, 12)).splitlines()  # tiny: squeezed, never broken
        assert app.is_running and len(tiny) == 12 and tiny[-1].startswith("p Pause")
    assert all(len(ln) <= 80 for ln in narrow.splitlines()) and len(narrow.splitlines()) == 24
    assert len(large.splitlines()) == 60
    for screen in (narrow, large):
        assert "Metrics" in screen and "Early stopping" in screen and "p Pause" in screen and "val_acc" in screen


@run_async
async def test_p_s_q_send_their_commands_and_q_asks_first() -> None:
    async with monitor(epochs(2), (100, 30)) as (run, app, pilot, screen):
        await pilot.press("p")
        await wait_for(pilot, lambda: run.sent == ["pause"], what="pause")
        run.push(StateChanged("paused", time=T0 + 10))
        await wait_for(pilot, lambda: "PAUSED" in screen_text(app), what="PAUSED")
        assert "ETA (paused)" in screen_text(app)

        await pilot.press("s")
        await wait_for(pilot, lambda: run.sent[-1:] == ["save"], what="save")
        run.push(CheckpointSaved("manual", "checkpoints/manual-step0000016.pt", 2, 16, 0.6, "val_loss", time=T0 + 11))
        await wait_for(
            pilot, lambda: "manual-step0000016.pt" in screen_text(app), what="the manual checkpoint in the log"
        )

        await pilot.press("q")  # asks; n keeps training
        await wait_for(pilot, lambda: "Stop the run?" in screen_text(app), what="the stop dialog")
        await pilot.press("n")
        await wait_for(pilot, lambda: "Stop the run?" not in screen_text(app), what="the dialog to close")
        assert "stop" not in run.sent

        await pilot.press("q", "y")
        await wait_for(pilot, lambda: run.sent[-1:] == ["stop"], what="stop")
        assert app.is_running  # it waits for the run to finish stopping
        run.push(
            StateChanged("stopping", "stopped by request", time=T0 + 12),
            CheckpointSaved("last", "checkpoints/last.pt", 2, 17, 0.6, "val_loss", time=T0 + 12),
            Finished("stopped", "stopped by request", 2, 17, 0.6, 1, "val_loss", 12.0, time=T0 + 12),
        )
        await wait_for(pilot, lambda: not app.is_running, what="the monitor to close once the run stopped")
    assert app.return_value == "left" and app.model.exit_status() == 0 and app.model.state == "stopped"
    assert run.sent == ["pause", "save", "stop"]


@run_async
async def test_ctrl_c_stops_without_asking_and_a_second_one_forces() -> None:
    async with monitor(epochs(1), (80, 24)) as (run, app, pilot, screen):
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: run.sent == ["stop"], what="stop")
        assert "Stop the run?" not in screen_text(app)
        await wait_for(pilot, lambda: "Ctrl+C again" in screen_text(app), what="the hint about forcing")
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: run.sent == ["stop", "force"], what="force")
        await wait_for(pilot, lambda: "forcing the training process" in screen_text(app), what="the forcing note")
        checks = run.alive_checks
        await wait_for(pilot, lambda: run.alive_checks > checks, what="a look at the process after the force")
        await pilot.pause()  # until idle: what that look found is handled
        assert app.is_running, "it says forced only once the process is gone"
        run.push(Finished("forced", "forced to exit without saving", 1, 8, 0.9, 1, "val_loss", 2.0, time=T0 + 3))
        run.is_alive = False
        await wait_for(pilot, lambda: not app.is_running, what="the monitor to close")
    assert app.return_value == "forced" and not run.killed and app.model.exit_status() == 130


@run_async
async def test_ctrl_c_in_an_attached_monitor_detaches() -> None:
    async with monitor(epochs(1), (80, 24), attached=True) as (run, app, pilot, screen):
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: not app.is_running, what="the monitor to close")
    assert run.sent == [] and app.return_value == "detached"


@run_async
async def test_a_second_ctrl_c_kills_a_run_that_is_not_listening_yet() -> None:
    run = FakeRun()
    tried: list[str] = []

    def not_listening(cmd: str) -> dict:
        tried.append(cmd)
        try:
            raise FileNotFoundError("control.sock")
        except FileNotFoundError as e:
            raise ControlError("not live: it has no control socket") from e

    app = MonitorApp(run, not_listening, run_dir="/home/me/runs/x")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: "stop" in tried, what="the stop tried on the run that does not listen")
        await pilot.pause()  # until idle: what the refusal brings is handled
        assert app.is_running and not run.killed
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: not app.is_running, 10, what="the monitor to close")
    assert run.killed and app.return_value == "forced" and app.model.state == "forced"


@run_async
async def test_d_leaves_the_run_going() -> None:
    async with monitor(epochs(1), (80, 24)) as (run, app, pilot, screen):
        await pilot.press("d")
        await wait_for(pilot, lambda: not app.is_running, what="the monitor to close")
    assert run.sent == [] and app.return_value == "detached" and app.model.exit_status() == 0


@run_async
async def test_a_finished_run_stays_on_screen_until_the_user_leaves() -> None:
    events = [*epochs(3), Finished("completed", "10 epochs done", 10, 80, 0.6, 1, "val_loss", 42.0, time=T0 + 50)]
    async with monitor(events, (80, 24)) as (run, app, pilot, screen):
        run.is_alive = False
        await wait_for(pilot, lambda: run.asked_exit_code, what="the monitor to see the process gone")
        await pilot.pause()  # until idle: it took the news; the process is gone too, and it is still on screen
        assert app.is_running and "COMPLETED" in screen and "completed (10 epochs done)" in screen
        footer = screen.splitlines()[-1]
        assert "Leave" in footer and "Pause" not in footer and "Detach" not in footer
        await pilot.press("p", "s")  # nothing to command any more: the keys do not act
        await keys_handled(pilot, app)
        assert run.sent == [] and not any("save requested" in e.text for e in app.model.log)
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.is_running, what="enter to leave")
    assert app.return_value == "left" and app.model.exit_status() == 0


@run_async
async def test_exit_on_finish_closes_by_itself() -> None:
    run = FakeRun()
    app = make_app(run, exit_on_finish=True)
    async with app.run_test(size=(80, 24)) as pilot:
        run.push(*epochs(2))
        await settled(pilot, run, app, len(epochs(2)))
        assert app.is_running
        run.push(
            Finished(
                "early_stopped", "val_loss did not improve for 3 checks", 2, 16, 0.6, 1, "val_loss", 3.0, time=T0 + 9
            )
        )
        await wait_for(pilot, lambda: not app.is_running, what="the monitor to close on its own")
    assert app.model.state == "early_stopped" and app.model.exit_status() == 0


@run_async
async def test_read_only_view_sends_nothing_and_q_leaves_at_once() -> None:
    """A read-only view of a live run: p, s and q do not reach it (q leaves instead of stopping)."""
    async with monitor(epochs(2), (80, 24), read_only=True) as (run, app, pilot, screen):
        assert "read-only" in screen and app.commander is None  # it was handed one, and dropped it
        footer = screen.splitlines()[-1]
        assert "Pause" not in footer and "Save" not in footer and "Leave" in footer
        await pilot.press("p", "s")
        await keys_handled(pilot, app)
        assert not any("save requested" in e.text for e in app.model.log), "s did not act"
        assert not isinstance(app.screen, Confirm)
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, what="q to leave")
    assert run.sent == [] and app.return_value == "left" and app.model.state == "running"


@run_async
async def test_a_crash_in_user_code_shows_the_error_and_where() -> None:
    tb = 'Traceback (most recent call last):\n  File "/home/me/models.py", line 42, in forward\n    return self.net(x) / 0\nZeroDivisionError: division by zero\n'
    frames = ['File "/home/me/models.py", line 42, in forward', "  return self.net(x) / 0"]
    events = [
        *epochs(2),
        Failed(
            "ZeroDivisionError: division by zero",
            "training, epoch 3, step 20: models.py:42 in forward",
            tb,
            frames,
            time=T0 + 9,
        ),
        CheckpointSaved("last", "checkpoints/last.pt", 2, 19, 0.6, "val_loss", time=T0 + 9),
        Finished("failed", "ZeroDivisionError in training", 2, 19, 0.6, 1, "val_loss", 9.0, time=T0 + 9),
    ]
    async with monitor(events, (100, 30)) as (run, app, pilot, screen):
        await pilot.press("q")  # over: q leaves without asking
        await wait_for(pilot, lambda: not app.is_running, what="q to leave")
    assert "FAILED" in screen and "Error" in screen
    assert "ZeroDivisionError: division by zero" in screen and "models.py:42 in forward" in screen
    assert "return self.net(x) / 0" in screen  # the user's line of the traceback
    assert app.model.exit_status() == 1


@run_async
async def test_a_nan_loss_shows_its_message_as_the_error() -> None:
    text = "the training loss became nan at step 41; training stopped and the last good state (before step 41) is saved in checkpoints/last.pt."
    events = [
        *epochs(2),
        Message("error", text, time=T0 + 5),
        Finished("failed", "the training loss became nan at step 41", 2, 40, 0.6, 1, "val_loss", 5.0, time=T0 + 5),
    ]
    async with monitor(events, (100, 30)) as (_, app, _, screen):
        assert (
            "FAILED" in screen
            and "Error" in screen
            and "the training loss became nan at step 41; training stopped" in screen
        )
    assert app.model.exit_status() == 1


@run_async
async def test_a_process_that_dies_without_finishing_is_shown_as_crashed() -> None:
    async with monitor(epochs(1), (80, 24)) as (run, app, pilot, screen):
        run.code = -9
        run.is_alive = False
        await wait_for(pilot, lambda: "CRASHED" in screen_text(app), what="CRASHED")
        assert "exited with status -9" in screen_text(app)
    assert app.model.exit_status() == 1


@run_async
async def test_a_refused_command_is_shown_in_the_log() -> None:
    async with monitor(epochs(1), (100, 30)) as (run, app, pilot, screen):
        run.refuse = "permission denied: only the user who started it can control it"
        await pilot.press("p")
        await wait_for(pilot, lambda: "pause: permission denied" in screen_text(app), what="the refusal in the log")
        assert app.model.state == "running"


@run_async
async def test_keys_pressed_while_the_run_starts_are_delivered_once_it_listens() -> None:
    run = FakeRun()
    listening = threading.Event()
    tried: list[str] = []

    def command(cmd: str) -> dict:
        tried.append(cmd)
        if not listening.is_set():
            try:
                raise FileNotFoundError("control.sock")
            except FileNotFoundError as e:
                raise ControlError("the run is not live: it has no control socket") from e
        return run.command(cmd)

    app = MonitorApp(run, command, run_dir="/home/me/runs/x")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "STARTING" in screen_text(app), what="the first frame")
        assert "STARTING" in screen_text(app) and "waiting for the training process" in screen_text(app)
        run.push(Starting("importing torch", time=T0 - 2), Starting("loading the data", time=T0 - 1))
        await wait_for(pilot, lambda: "starting: loading the data" in screen_text(app), what="the start-up phase")
        await pilot.press("p")
        await wait_for(pilot, lambda: "pause" in tried, what="the pause tried before the run listens")
        assert run.sent == []
        run.push(started())
        listening.set()
        await wait_for(pilot, lambda: run.sent == ["pause"], what="the pause once the run listens")


@run_async
async def test_lines_the_reader_skips_are_reported_in_the_log() -> None:
    async with monitor(epochs(1), (100, 30)) as (run, app, pilot, screen):
        with run._lock:
            run.skipped.append("line 7: unknown event type 'gpu_sample' (written by a newer tuiloop?)")
        await wait_for(
            pilot,
            lambda: "skipped a line of events.jsonl: line 7: unknown event type" in screen_text(app),
            what="the skipped line in the log",
        )
        assert app.is_running and app.model.step == 8
