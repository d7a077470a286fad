"""The control socket on its own: commands reach the mailbox, a silent client blocks no one."""

from __future__ import annotations

import socket
import stat
import time
from pathlib import Path

import pytest
from conftest import write_spec

from tuiloop import load_spec
from tuiloop.control import ControlError, ControlServer, send_command
from tuiloop.engine.commands import Commands
from tuiloop.rundir import CONTROL
from tuiloop.session import prepare_run_dir


@pytest.fixture
def server(tmp_path: Path):
    commands = Commands()
    srv = ControlServer(tmp_path / CONTROL, commands).start()
    yield tmp_path, commands
    srv.close()


def test_commands_reach_the_run_and_the_socket_is_owner_only(server) -> None:
    run_dir, commands = server
    assert stat.S_IMODE((run_dir / CONTROL).stat().st_mode) == 0o600
    assert send_command(run_dir, "pause") == {"ok": True}
    assert send_command(run_dir, "save") == {"ok": True}
    assert commands.take() == ["pause", "save"]
    with pytest.raises(ControlError, match="unknown command 'explode'"):
        send_command(run_dir, "explode")


def test_a_client_that_never_speaks_does_not_delay_others(server) -> None:
    run_dir, commands = server
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
    spec = load_spec(write_spec(workdir))
    run_dir = prepare_run_dir(spec)
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((run_dir / "checkpoints").stat().st_mode) == 0o700


@pytest.mark.parametrize("owner_alive", [False, True])
def test_a_connection_reset_names_a_dead_run_stale(tmp_path: Path, owner_alive: bool) -> None:
    """A run killed after accepting us resets the connection: stale if its process is gone."""
    import os
    import select
    import threading

    from tuiloop.rundir import RUN_INFO, process_start, write_json_atomic

    pid = os.getpid() if owner_alive else 0
    write_json_atomic(tmp_path / RUN_INFO, {"pid": pid, "pid_start": process_start(pid)})
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
