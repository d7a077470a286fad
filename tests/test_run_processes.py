"""A forced or killed run ends every process it started, and no child of it holds the run's lock:
with DataLoader workers stuck in the user's ``__getitem__``, ``ls`` says how the run ended the
moment its training process is gone, and ``--resume`` is accepted at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import cli_env, run_cli, write_spec
from runs_support import events, new_run_dir, process_gone, read_stderr_until, wait_until

from tuiloop.rundir.layout import read_json


def stuck_workers_spec(workdir: Path) -> Path:
    """Two persistent DataLoader workers that read epoch 1 (64 and 56 samples) and hang for an
    hour in epoch 2, after last.pt of epoch 1 is saved; each adds a line to ``stuck`` then."""
    return write_spec(
        workdir,
        run={"epochs": 5},
        data={
            "target": "tiny.py:stalling_classes",
            "marker": str(workdir / "stuck"),
            "after": 70,
            "num_workers": 2,
            "persistent_workers": True,
        },
    )


def start_in_own_session(workdir: Path, *args: str | Path) -> subprocess.Popen:
    """The real command in a session of its own: every process it starts is found by that session,
    and a signal to its group is what a terminal's Ctrl+C does."""
    return subprocess.Popen(
        [sys.executable, "-m", "tuiloop", *map(str, args)],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        start_new_session=True,
    )


def session_processes(sid: int) -> list[psutil.Process]:
    """The processes of session ``sid`` that are still running (a zombie has ended)."""
    left = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid and not process_gone(p.pid):
                left.append(p)
        except (OSError, psutil.Error):
            continue
    return left


def stuck(workdir: Path, proc: subprocess.Popen) -> Path:
    """Wait until both workers hang; the run directory."""
    marker = workdir / "stuck"
    wait_until(lambda: marker.exists() and len(marker.read_text().split()) == 2, 90, "both workers to hang")
    assert len(session_processes(proc.pid)) >= 3, "the training process and its workers"
    return new_run_dir(workdir / "runs", set())


def ls_state(workdir: Path, run_dir: Path) -> str:
    listed = run_cli("ls", workdir / "runs", cwd=workdir)
    row = next(line for line in listed.stdout.splitlines() if line.startswith(run_dir.name))
    return row.split()[1]


def kill_session(sid: int) -> None:
    for p in session_processes(sid):
        try:
            p.kill()
        except psutil.Error:
            pass


def test_a_forced_run_leaves_no_worker_and_no_lock_behind(workdir: Path) -> None:
    """Two Ctrl+C: the summary says forced, ``ls`` says forced at once, not one process of the
    run is left, and the run resumes (before, the stuck workers held run.lock: ``ls`` said
    running and ``--resume`` was refused as live)."""
    proc = start_in_own_session(workdir, "run", stuck_workers_spec(workdir), "--headless")
    try:
        run_dir = stuck(workdir, proc)
        os.killpg(proc.pid, signal.SIGINT)
        read_stderr_until(proc, "interrupt: stopping after this step", 10, "the first Ctrl+C to be heard")
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=10)
        assert proc.returncode == 130
        assert read_json(run_dir / "summary.json")["status"] == "forced"  # type: ignore[index]
        assert ls_state(workdir, run_dir) == "forced"
        assert session_processes(proc.pid) == [], "no process of the run is left"
    finally:
        kill_session(proc.pid)
    resumed = start_in_own_session(workdir, "run", "--resume", run_dir, "--headless")
    try:
        wait_until(lambda: len([e for e in events(run_dir) if e["event"] == "run_started"]) == 2, 60, "the resume")
        os.killpg(resumed.pid, signal.SIGINT)  # stop it, or (its workers hang again) force it
        read_stderr_until(resumed, "interrupt: stopping after this step", 10, "the Ctrl+C to be heard")
        os.killpg(resumed.pid, signal.SIGINT)
        _, err = resumed.communicate(timeout=30)
        assert resumed.returncode in (0, 130), err
    finally:
        kill_session(resumed.pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers die with their parent on Linux only")
def test_a_killed_run_is_crashed_at_once_and_leaves_no_worker(workdir: Path) -> None:
    """``kill -9`` of the training process: ``ls`` says crashed at once (before, its workers held
    run.lock until their watchdog noticed, 5 s, or for good while stuck) and the workers go."""
    proc = start_in_own_session(workdir, "run", stuck_workers_spec(workdir), "--headless")
    try:
        run_dir = stuck(workdir, proc)
        proc.kill()
        proc.wait(timeout=10)
        wait_until(lambda: process_gone(proc.pid), 10, "the training process's threads to end")
        assert ls_state(workdir, run_dir) == "crashed"
        wait_until(lambda: session_processes(proc.pid) == [], 5, "its workers to end with it")
    finally:
        kill_session(proc.pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the trainer dies with its watcher on Linux only")
def test_kill_9_of_the_pid_detach_printed_ends_the_run(workdir: Path) -> None:
    """The pid --detach prints is the watcher of the process that trains: a SIGKILL to it ends the
    training too (before, the run trained on, orphaned, with no process of the pid printed)."""
    done = run_cli("run", write_spec(workdir, run={"epochs": 100_000}), "--detach", cwd=workdir)
    assert done.returncode == 0, done.stderr
    printed = int(done.stdout.split("(pid ")[1].split(")")[0])
    run_dir = new_run_dir(workdir / "runs", set())
    wait_until(lambda: (read_json(run_dir / "run.json") or {}).get("pid"), 60, "the training process to start")
    trainer = read_json(run_dir / "run.json")["pid"]  # type: ignore[index]
    assert trainer != printed
    os.kill(printed, signal.SIGKILL)
    wait_until(lambda: process_gone(trainer), 10, "the training process to go with its watcher")
    assert run_cli("ls", workdir / "runs", cwd=workdir).stdout.splitlines()[1].split()[1] == "crashed"
