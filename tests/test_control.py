"""The control socket on its own: commands reach the mailbox, a silent client blocks no one, a
malformed request is answered and reported but stops nothing."""

from __future__ import annotations

import json
import select
import socket
import stat
import threading
import time
from pathlib import Path

import pytest
from conftest import write_spec

from tuiloop import load_spec
from tuiloop.engine.commands import Commands
from tuiloop.rundir.control import ControlError, ControlServer, send_command
from tuiloop.rundir.layout import CONTROL
from tuiloop.rundir.lock import RunLock
from tuiloop.runner.spec_run import new_run_dir


@pytest.fixture
def server(tmp_path: Path):
    commands = Commands()
    warnings: list[str] = []
    srv = ControlServer(tmp_path, commands, warn=warnings.append).start()
    yield tmp_path, commands, warnings
    srv.close()


def test_commands_reach_the_run_and_the_socket_is_owner_only(server) -> None:
    run_dir, commands, _ = server
    assert stat.S_IMODE((run_dir / CONTROL).stat().st_mode) == 0o600
    assert send_command(run_dir, "pause") == {"ok": True}
    assert send_command(run_dir, "save") == {"ok": True}
    assert commands.take() == ["pause", "save"]
    with pytest.raises(ControlError, match="unknown command 'explode'"):
        send_command(run_dir, "explode")


def _raw(run_dir: Path, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(run_dir / CONTROL))
        s.sendall(payload)
        return s.makefile("rb").readline()


@pytest.mark.parametrize(
    ("payload", "said"),
    [
        (b"hello\n", "is not JSON"),
        (b"[1, 2]\n", "is a JSON list, not an object"),
        (b'{"command": "stop"}\n', 'has no "cmd" string'),
        (b'{"cmd": 5}\n', 'has no "cmd" string'),
    ],
)
def test_malformed_requests_are_answered_reported_and_harmless(server, payload: bytes, said: str) -> None:
    run_dir, commands, warnings = server
    reply = json.loads(_raw(run_dir, payload))
    assert reply == {"ok": False, "error": f"bad request: it {said}"}
    assert len(warnings) == 1 and said in warnings[0] and "control socket: ignored a request" in warnings[0]
    assert commands.take() == []
    assert send_command(run_dir, "stop") == {"ok": True}, "the server goes on serving"
    assert commands.take() == ["stop"]


def test_force_is_answered_before_it_acts(server) -> None:
    run_dir, commands, _ = server
    forced = threading.Event()
    commands.on_force = forced.set  # a session ends the process here
    assert send_command(run_dir, "force") == {"ok": True}
    assert forced.wait(5) and commands.take() == []


def test_a_client_that_never_speaks_does_not_delay_others(server) -> None:
    run_dir, commands, _ = server
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(str(run_dir / CONTROL))
    try:
        t0 = time.monotonic()
        assert send_command(run_dir, "stop", timeout=2.0) == {"ok": True}
        assert time.monotonic() - t0 < 1.0
        assert commands.take() == ["stop"]
    finally:
        silent.close()


def test_run_directories_are_owner_only(workdir: Path) -> None:
    """Where no second user can be made to try (test_ssh), the permissions that keep one out."""
    run_dir, lock = new_run_dir(load_spec(write_spec(workdir)))
    lock.release()
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((run_dir / "checkpoints").stat().st_mode) == 0o700
    assert stat.S_IMODE((run_dir / "run.lock").stat().st_mode) == 0o600


@pytest.mark.parametrize("owner_alive", [False, True])
def test_a_connection_reset_names_a_dead_run_stale(tmp_path: Path, owner_alive: bool) -> None:
    """A run killed after accepting us resets the connection: stale if its lock is free."""
    lock = RunLock.acquire(tmp_path)
    if not owner_alive:
        lock.release()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / CONTROL))
    listener.listen()

    def die_unread() -> None:  # closing with the request unread resets the client
        conn, _ = listener.accept()
        select.select([conn], [], [], 5)
        conn.close()

    t = threading.Thread(target=die_unread, daemon=True)
    t.start()
    try:
        expected = "closed the connection without answering" if owner_alive else "stale control socket"
        with pytest.raises(ControlError, match=expected):
            send_command(tmp_path, "pause")
    finally:
        t.join(5)
        listener.close()
        lock.release()


def test_a_flood_of_warnings_is_told_three_times_then_counted_once_an_interval() -> None:
    from tuiloop.rundir.rate_limit import RateLimitedWarnings

    now, told = [0.0], []
    warn = RateLimitedWarnings(
        told.append,
        lambda n, s, last: f"{n} more in {s:.0f}s, the last: {last}",
        first=3,
        every=60,
        clock=lambda: now[0],
    )
    for i in range(10):
        warn(f"bad {i}")
    assert told == ["bad 0", "bad 1", "bad 2"] and warn.due() == 60
    now[0] = 59
    warn.tick()
    assert len(told) == 3, "not before the interval is over"
    now[0] = 60
    warn.tick()
    assert told[3:] == ["7 more in 60s, the last: bad 9"]
    now[0] = 61
    warn("bad 10")  # the flood goes on: counted, not told
    assert len(told) == 4
    now[0] = 121
    warn.tick()
    assert told[4:] == ["1 more in 60s, the last: bad 10"]
    now[0] = 181  # a quiet interval since the last one: the next ones are told in full again
    warn.tick()
    warn("again")
    assert told[-1] == "again"
    for _ in range(5):
        warn("more")
    warn.flush(mute=True)  # the log ends: what is held is told, and nothing after
    assert told[-1] == "3 more in 0s, the last: more"
    warn("after the end")
    assert told[-1] != "after the end"
