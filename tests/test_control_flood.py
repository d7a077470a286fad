"""The control channel of a live run against misbehaving clients, with real limits: a flood of
idle connections under a low ``RLIMIT_NOFILE``, a flood of bad requests, an ``accept()`` that
fails. The run keeps its files, its commands and its summary; its log stays readable."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import FIXTURES, cli_env, load_ckpt, run_cli, write_spec
from runs_support import events, freeze, kill_run, run_pid, summary, wait_live, wait_until

from tuiloop.rundir.control import ControlError, send_command
from tuiloop.rundir.layout import CONTROL

NOFILE = 128  # the training process's soft limit on open files
IDLE_CLIENTS = 3 * NOFILE  # connections that never say a word, held at once
BAD_REQUESTS = 300
# 8 steps of 50 ms per epoch and far more epochs than the test waits for: it ends when told to.
LONG = dict(run={"epochs": 2000}, model={"delay": 0.05})


def start_limited(spec: Path, cwd: Path, nofile: int) -> Path:
    """``tuiloop run --detach SPEC`` with its soft ``RLIMIT_NOFILE`` lowered to ``nofile`` (the
    training process inherits it); returns the run directory."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    done = subprocess.run(
        [sys.executable, "-m", "tuiloop", "run", "--detach", str(spec)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(),
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard)),
    )
    assert done.returncode == 0, done.stderr
    m = re.search(r"^started (\S+) \(pid \d+\)", done.stdout, re.M)
    assert m, done.stdout
    return Path(m.group(1))


def bad_request(run_dir: Path) -> bytes:
    """One request the run cannot use; its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(run_dir / CONTROL))
        s.sendall(b"hello\n")
        return s.makefile("rb").readline()


def open_idle(run_dir: Path, n: int) -> tuple[list[socket.socket], int]:
    """``n`` connections that say nothing (those the run's backlog would not take are counted)."""
    held, refused = [], 0
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(str(run_dir / CONTROL))
        except OSError:
            s.close()
            refused += 1
            continue
        held.append(s)
    return held, refused


def checkpoints_since(run_dir: Path, since: float) -> list[dict]:
    return [e for e in events(run_dir) if e["event"] == "checkpoint" and e["time"] > since]


def tags(checkpoints: list[dict]) -> list[str]:
    return [e["tag"] for e in checkpoints]


def warnings(run_dir: Path) -> list[str]:
    return [e["text"] for e in events(run_dir) if e["event"] == "message" and e["level"] == "warning"]


@dataclass
class Flooded:
    """What one live run went through, for the tests below to judge."""

    run_dir: Path
    workdir: Path
    bad_replies: list[bytes] = field(default_factory=list)
    refused_idle: int = 0
    save: str = ""  # the save command's reply, or its error
    save_s: float = 0.0
    stop: str = ""
    checkpoints_during_flood: list[dict] = field(default_factory=list)


@pytest.fixture(scope="module")
def flooded(tmp_path_factory: pytest.TempPathFactory):
    """One live run under ``RLIMIT_NOFILE`` = 128: bad requests, then three times the limit in
    idle connections held while a checkpoint is due and a save is asked, then a stop."""
    workdir = tmp_path_factory.mktemp("flood")
    shutil.copy(FIXTURES / "tiny.py", workdir / "tiny.py")
    run_dir = start_limited(write_spec(workdir, **LONG), workdir, NOFILE)
    out = Flooded(run_dir, workdir)
    try:
        wait_live(run_dir)
        out.bad_replies = [bad_request(run_dir) for _ in range(BAD_REQUESTS)]
        flood_started = time.time()
        idle, out.refused_idle = open_idle(run_dir, IDLE_CLIENTS)
        try:
            t0 = time.monotonic()
            try:
                out.save = json.dumps(send_command(run_dir, "save"))
            except ControlError as e:
                out.save = f"error: {e}"
            out.save_s = time.monotonic() - t0
            # the flood is held, and grows, until the run wrote its own checkpoint (last.pt, each
            # epoch) through it; a minute without one and the test below fails, naming the tags seen
            held_until = time.monotonic() + 60
            while time.monotonic() < held_until and "last" not in tags(checkpoints_since(run_dir, flood_started)):
                more, refused = open_idle(run_dir, 16)
                idle += more
                out.refused_idle += refused
                time.sleep(0.1)  # the pace of the flood
            out.checkpoints_during_flood = checkpoints_since(run_dir, flood_started)
            try:
                out.stop = json.dumps(send_command(run_dir, "stop"))
            except ControlError as e:
                out.stop = f"error: {e}"
        finally:
            for s in idle:
                s.close()
        if out.stop.startswith("{"):
            wait_until(lambda: summary(run_dir), 60, "the summary after the stop")
        yield out
    finally:
        kill_run(run_dir)


def test_a_flood_of_idle_connections_leaves_the_run_its_files_and_its_commands(flooded: Flooded) -> None:
    run_dir = flooded.run_dir
    assert flooded.refused_idle == 0, "every connection of the flood was taken (and the idle ones let go)"
    assert flooded.save == '{"ok": true}', flooded.save
    assert flooded.save_s < 2.0, f"the save took {flooded.save_s:.1f}s to get through the flood"
    saved = tags(flooded.checkpoints_during_flood)
    assert "manual" in saved and "last" in saved, saved
    for e in flooded.checkpoints_during_flood:
        assert load_ckpt(run_dir / e["path"])["step"] > 0
    assert flooded.stop == '{"ok": true}', flooded.stop
    s = summary(run_dir)
    assert s is not None and s["status"] == "stopped", s
    listed = run_cli("ls", run_dir.parent, cwd=flooded.workdir)
    assert listed.stdout.splitlines()[1].split()[1] == "stopped", listed.stdout
    said = (run_dir / "output.log").read_text() + (run_dir / "events.jsonl").read_text()
    assert "Too many open files" not in said and "Traceback" not in said


def test_bad_requests_are_answered_and_warned_about_a_few_times_then_counted(flooded: Flooded) -> None:
    """300 bad requests: each is answered; the log tells the first three, then counts the rest."""
    assert set(flooded.bad_replies) == {b'{"ok": false, "error": "bad request: it is not JSON"}\n'}
    every = warnings(flooded.run_dir)
    told = [w for w in every if w.startswith("control socket: ignored")]
    first = [w for w in told if w.startswith("control socket: ignored a request that is not JSON: b'hello")]
    counted = [re.match(r"control socket: ignored ([\d,]+) more bad requests? in the last \d+s", w) for w in told]
    assert len(first) == 3, told
    assert all(counted[len(first) :]) and len(told) <= len(first) + 3, told
    assert len(first) + sum(int(m.group(1).replace(",", "")) for m in counted if m) == BAD_REQUESTS, told
    # the idle flood's connections, let go, are told about in as few lines
    assert len(every) - len(told) <= 3 + 3, every


def test_a_failed_accept_is_survived_and_the_waiting_command_served(workdir: Path, cleanup: list[Path]) -> None:
    """The training process runs out of descriptors (its limit lowered below what it holds), so
    ``accept()`` fails with EMFILE; once descriptors are free again, the command that waited is
    served and the run goes on."""
    spec = write_spec(workdir, **LONG, checkpoint={"best": False, "last": False})  # no file to open meanwhile
    run_dir = start_limited(spec, workdir, 1024)
    cleanup.append(run_dir)
    wait_live(run_dir)
    pid = run_pid(run_dir)
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    replies: list[object] = []

    def pause() -> None:
        try:
            replies.append(send_command(run_dir, "pause", timeout=30))
        except ControlError as e:
            replies.append(e)

    resource.prlimit(pid, resource.RLIMIT_NOFILE, (3, limits[1]))  # no new descriptor
    try:
        sender = threading.Thread(target=pause, daemon=True)
        sender.start()
        wait_until(
            lambda: any("Too many open files" in w for w in warnings(run_dir)), 20, "the failed accept in the log"
        )
        assert not replies, "answered without a descriptor?"
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
    sender.join(30)
    assert replies == [{"ok": True}], replies
    wait_until(
        lambda: [e["state"] for e in events(run_dir) if e["event"] == "state"][-1:] == ["paused"], 20, "the pause"
    )
    assert send_command(run_dir, "stop") == {"ok": True}
    wait_until(lambda: summary(run_dir), 60, "the summary")
    assert summary(run_dir)["status"] == "stopped"


def test_a_command_to_a_frozen_run_with_a_full_backlog_waits_instead_of_failing(
    workdir: Path, cleanup: list[Path]
) -> None:
    """A burst fills the backlog of a run frozen for a second (SIGSTOP): a command sent meanwhile
    retries within its timeout instead of failing at once with EAGAIN, and is served once the
    process goes on."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    burst = 2 * socket.SOMAXCONN  # more than any backlog the kernel allows
    if hard != resource.RLIM_INFINITY and hard < burst + 256:
        pytest.skip(f"the burst needs {burst} descriptors in this process; its hard limit is {hard}")
    run_dir = start_limited(write_spec(workdir, **LONG), workdir, 1024)
    cleanup.append(run_dir)
    wait_live(run_dir)
    pid = run_pid(run_dir)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, burst + 256), hard))
    idle: list[socket.socket] = []
    thaw = threading.Timer(1.0, os.kill, (pid, signal.SIGCONT))
    try:
        freeze(pid)
        idle, refused = open_idle(run_dir, burst)
        assert refused, "the burst filled the backlog of the frozen run"
        thaw.start()
        t0 = time.monotonic()
        reply = send_command(run_dir, "ping", timeout=20)
        waited = time.monotonic() - t0
    finally:
        thaw.cancel()
        os.kill(pid, signal.SIGCONT)
        for s in idle:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert reply["pid"] == pid and waited > 0.5, (reply, waited)
    assert send_command(run_dir, "stop") == {"ok": True}
    wait_until(lambda: summary(run_dir), 60, "the summary")
