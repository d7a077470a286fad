"""The table of commands is the one list: the footer, the ``?`` screen, the control server, the
slots ranks agree through and what ``tuiloop.track`` obeys all say exactly what it says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_tui_screen import T0, epochs, keys_handled, monitor, run_async, screen_text, wait_for

from tuiloop.engine.commands import AGREED, COMMAND, COMMANDS, Commands, obeyed_by
from tuiloop.engine.distributed import SLOTS
from tuiloop.engine.events import SettingChanged, StateChanged
from tuiloop.rundir.control import ControlError, ControlServer, send_command
from tuiloop.tui.app import MonitorApp
from tuiloop.tui.bindings import KEYS
from tuiloop.tui.screens import Confirm, KeysScreen

KEYED = [c for c in COMMANDS if c.key]


def test_the_app_binds_each_key_of_the_table_and_no_other_command() -> None:
    for c in COMMANDS:
        bound = [b for b in MonitorApp.BINDINGS if b.action == c.name]
        if not c.key:
            assert bound == [], f"{c.name} has no key in the table"
            continue
        assert len(bound) == 1, c.name
        (b,) = bound
        assert (b.key, b.description, b.key_display, b.show) == (c.key, c.label, c.shown or None, True), c.name
    commands = [b.action for b in MonitorApp.BINDINGS if b.action in COMMAND]
    assert commands == [c.name for c in KEYED], "every command binding comes from the table, in its order"


def test_the_keys_list_has_a_row_for_each_key_of_the_table_with_its_help() -> None:
    rows = {row.keys: row for row in KEYS if row.keys}
    for c in KEYED:
        (row,) = [r for r in rows.values() if any(b.action == c.name for b in r.bindings)]
        assert row.help == c.help and (c.shown or c.key) in row.keys.split(" / ")
    assert rows["- / +"].help.startswith("halve / double the learning rate")


@run_async
async def test_footer_and_question_mark_show_the_table_and_each_key_asks_as_it_says() -> None:
    async with monitor(epochs(2), (200, 50)) as (run, app, pilot, screen):
        bar = screen.splitlines()[-1]
        for c in KEYED:  # p Pause on a running run (Resume on a paused one: tests/test_pause_idempotent.py); e likewise
            shown = f"{c.shown or c.key} {c.label}" in bar
            assert shown == (c.name not in ("resume", "go_on")), (c.name, bar)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, KeysScreen))
        box = app.screen.query_one("#dialog").region
        lines = screen_text(app).splitlines()[box.y : box.bottom]
        text = " ".join(" ".join(line[box.x + 1 : box.right - 1] for line in lines).split())  # the rows, unwrapped
        for c in KEYED:
            assert c.help in text, (c.name, text)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, KeysScreen))
        # stop last: after it the monitor waits for the run to end
        for c in sorted(KEYED, key=lambda c: c.name == "stop"):
            if c.name in ("pause", "resume"):  # p sends the one the run's state calls for
                state = "running" if c.name == "pause" else "paused"
                run.push(StateChanged(state, time=T0 + 30))
                await wait_for(pilot, lambda: app.model.state == state, what=state)  # noqa: B023
            if c.name == "go_on":  # e sends go_on once the run is set to stop after its epoch
                run.push(SettingChanged("stop_after_epoch", False, True, 1, 5, "command", time=T0 + 31))
                await wait_for(pilot, lambda: app.model.stop_after_epoch, what="set to stop")
            await pilot.press(c.key)
            if c.asks:
                await wait_for(pilot, lambda: isinstance(app.screen, Confirm), what=f"the question before {c.name}")
                await pilot.press("y")
            else:
                await keys_handled(pilot, app)
                assert not isinstance(app.screen, Confirm), f"{c.name} does not ask"
            await wait_for(pilot, lambda: run.sent[-1:] == [c.name], what=c.name)  # noqa: B023
        assert run.sent == sorted((c.name for c in KEYED), key=lambda name: name == "stop")


def test_the_control_server_accepts_exactly_the_commands_of_the_table(tmp_path: Path) -> None:
    commands = Commands()
    forced: list[bool] = []
    commands.on_force = lambda: forced.append(True)
    server = ControlServer(tmp_path, commands).start()
    try:
        for c in COMMANDS:
            settings = {"settings": {"optimizer.lr": 0.1}} if c.name == "set" else {}  # set carries settings
            assert send_command(tmp_path, c.name, **settings) == {"ok": True}, c.name
        with pytest.raises(ControlError, match='a "set" without a "settings" object'):
            send_command(tmp_path, "set")
        for name in ("lr", "quit", "Pause"):
            with pytest.raises(ControlError, match=f"unknown command {name!r}"):
                send_command(tmp_path, name)
    finally:
        server.close()
    assert commands.take() == [c.name for c in COMMANDS if not c.at_once]
    assert forced == [True] * sum(c.at_once for c in COMMANDS)
    assert commands.take_settings() == {"optimizer.lr": 0.1}
    with pytest.raises(ValueError, match="unknown command"):
        Commands().send("lr")


def test_track_and_the_distributed_slots_are_derived_from_the_table() -> None:
    from tuiloop.runner.track import OBEYED

    assert OBEYED == tuple(c.name for c in COMMANDS if "track" in c.obeyed_by) == obeyed_by("track")
    assert OBEYED == ("pause", "resume", "save", "stop", "force")
    assert SLOTS == (*AGREED, "flush", "next")
    assert set(AGREED) == {c.name for c in COMMANDS if "distributed" in c.obeyed_by} - {"force"}
    assert not [c.name for c in COMMANDS if c.agreed and "distributed" not in c.obeyed_by]


def test_the_table_loads_without_torch_or_textual() -> None:
    code = (
        "import sys\n"
        "import tuiloop.engine.commands\n"
        "bad = sorted(m for m in ('torch', 'textual', 'rich') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
