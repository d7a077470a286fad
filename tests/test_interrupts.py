"""Ending a run when the user means it: a second Ctrl+C and the force command end the training
process within 2 s even while it is blocked (a hung dataset read, a long C call), and Ctrl+C with
DataLoader workers stops gracefully instead of failing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_env, load_ckpt, write_spec
from runs_support import (
    TUILOOP,
    Tmux,
    new_run_dir,
    process_gone,
    read_stderr_until,
    start_training_process,
    wait_live,
    wait_until,
)

from tuiloop.rundir.control import send_command
from tuiloop.rundir.layout import read_json
from tuiloop.rundir.state import run_state

BLOCKED = {
    "a hung dataset read": lambda marker: dict(
        data={"target": "tiny.py:stalling_classes", "marker": marker, "after": 40}
    ),
    "a long C call in forward": lambda marker: dict(model={"target": "tiny.py:CStuckMLP", "marker": marker, "at": 5}),
}


def start_headless(workdir: Path, spec: Path) -> subprocess.Popen:
    """``tuiloop run SPEC --headless`` in its own process group, so a test can signal the group
    as a terminal's Ctrl+C does (the DataLoader workers included)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tuiloop", "run", str(spec), "--headless"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        start_new_session=True,
    )


@pytest.mark.parametrize("blocked", list(BLOCKED))
def test_a_second_ctrl_c_ends_a_blocked_run_within_2s(workdir: Path, blocked: str) -> None:
    marker = workdir / "stuck"
    spec = write_spec(workdir, run={"epochs": 5}, **BLOCKED[blocked](str(marker)))
    proc = start_headless(workdir, spec)
    try:
        wait_until(marker.exists, 60, f"the run to block in {blocked}")
        os.killpg(proc.pid, signal.SIGINT)
        heard = read_stderr_until(proc, "interrupt: stopping after this step", 10, "the first Ctrl+C to be heard")
        assert proc.poll() is None, "one Ctrl+C only asks to stop at the next step"
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=10)
        assert time.monotonic() - t0 < 2.0
        err = heard + err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "second interrupt, exiting now without saving" in err and "Traceback" not in err
    run_dir = new_run_dir(workdir / "runs", set())
    assert read_json(run_dir / "summary.json")["status"] == "forced"  # type: ignore[index]
    assert run_state(run_dir).state == "forced"


@pytest.mark.parametrize("blocked", list(BLOCKED))
def test_the_force_command_ends_a_blocked_run_within_2s(workdir: Path, blocked: str) -> None:
    """What the monitor's second Ctrl+C sends, over the control socket of a background run."""
    from tuiloop import load_spec

    marker = workdir / "stuck"
    run_dir, proc = start_training_process(
        load_spec(write_spec(workdir, run={"epochs": 5}, **BLOCKED[blocked](str(marker))))
    )
    try:
        wait_live(run_dir)
        wait_until(marker.exists, 60, f"the run to block in {blocked}")
        t0 = time.monotonic()
        assert send_command(run_dir, "force") == {"ok": True}
        proc.wait(timeout=10)
        assert time.monotonic() - t0 < 2.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    summary = read_json(run_dir / "summary.json")
    assert summary is not None and summary["status"] == "forced"
    assert [e for e in (run_dir / "events.jsonl").read_text().splitlines() if '"forced"' in e], (
        "the forced end is in the log"
    )


@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
def test_ctrl_c_with_dataloader_workers_stops_gracefully(workdir: Path, context: str) -> None:
    """The terminal's Ctrl+C reaches the workers too; they must not die of it and fail the run.
    With spawn and forkserver the workers unpickle the dataset of the spec-relative tiny.py."""
    spec = write_spec(
        workdir,
        run={"epochs": 200, "log_interval": 0.01},
        model={"delay": 0.01},
        data={"target": "tiny.py:noisy_classes", "num_workers": 2, "multiprocessing_context": context},
    )
    proc = start_headless(workdir, spec)
    try:
        log = wait_until(
            lambda: (
                next(iter((workdir / "runs").glob("*/events.jsonl")), None) if (workdir / "runs").is_dir() else None
            ),
            60,
            "the event log",
        )
        run_dir = log.parent
        wait_until(lambda: b'"event":"validated"' in log.read_bytes(), 90, "a first epoch with workers")
        os.killpg(proc.pid, signal.SIGINT)  # the whole foreground group, as a terminal does
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    summary = read_json(run_dir / "summary.json")
    assert summary is not None and summary["status"] == "stopped" and "SIGINT" in summary["reason"], (summary, err)
    assert load_ckpt(run_dir / "checkpoints" / "last.pt")["step"] == summary["steps"] > 0
    assert "DataLoader worker" not in err and "Traceback" not in err


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_ctrl_c_twice_in_the_monitor_of_a_blocked_run_ends_it_within_2s(workdir: Path, tmux: Tmux) -> None:
    """In a real terminal, the monitor on a run hung in a dataset read: the first Ctrl+C asks for
    a graceful stop (which cannot come), the second forces it; the training process is gone
    within 2 s, and only then does the monitor say it was forced."""
    marker = workdir / "stuck"
    spec = write_spec(workdir, run={"epochs": 5}, **BLOCKED["a hung dataset read"](str(marker)))
    term = tmux.new("blocked", f"{TUILOOP} run {spec}; echo '[exit '$?']'", width=120, height=40)
    wait_until(marker.exists, 60, "the run to block")
    run_dir = new_run_dir(workdir / "runs", set())
    pid = read_json(run_dir / "run.json")["pid"]  # type: ignore[index]
    tmux.send(term, "C-c")
    tmux.wait_for(term, r"Ctrl\+C again forces", 10)
    assert not process_gone(pid), "one Ctrl+C only asks to stop at the next step"
    tmux.send(term, "C-c")
    t0 = time.monotonic()
    wait_until(lambda: process_gone(pid), 5, "the training process to end")
    assert time.monotonic() - t0 < 2.0
    screen = tmux.wait_for(term, r"\[exit 130\]", 15)
    assert "forced to exit without saving (second Ctrl+C); its process is gone" in screen, screen
    assert run_state(run_dir).state == "forced"
