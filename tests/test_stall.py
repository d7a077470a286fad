"""A stuck run is noticed, with the line it is stuck on: the training process's own stall watch
(a data read that hangs, a read slow once), and a frozen process judged from outside by ``ls``."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
from conftest import run_cli, write_spec
from runs_support import events, start_detached, wait_until

from tuiloop.rundir.control import send_command
from tuiloop.rundir.layout import read_json
from tuiloop.runner.stall import StallWatch

pytestmark = pytest.mark.slow


def stalling(workdir: Path, hang: float, **run: object) -> Path:
    """Reads hang after 70 samples (batch 16: after step 4), in the main process (no workers)."""
    return write_spec(
        workdir,
        run={"epochs": 3, **run},
        data={"target": "tiny.py:stalling_classes", "marker": str(workdir / "stuck"), "after": 70, "hang": hang},
    )


def ls_state(workdir: Path, run_dir: Path) -> str:
    listed = run_cli("ls", workdir / "runs", cwd=workdir).stdout.splitlines()
    return next(line for line in listed if line.startswith(run_dir.name)).split()[1]


def status_state(workdir: Path, run_dir: Path) -> str:
    return json.loads(run_cli("status", run_dir, "--json", cwd=workdir).stdout)["state"]


def test_a_run_stuck_in_a_data_read_is_stalled_at_the_datasets_line_then_forced(workdir: Path) -> None:
    run_dir = start_detached(stalling(workdir, 3600, stall_after=1.0), cwd=workdir)
    try:
        wait_until(lambda: any(e["event"] == "stalled" for e in events(run_dir)), 60, "the stall to be noticed")
        (stalled,) = [e for e in events(run_dir) if e["event"] == "stalled"]
        assert re.fullmatch(r"tiny\.py:\d+ in __getitem__", stalled["where"]), stalled
        assert stalled["after_s"] == 1.0 and stalled["quiet_s"] >= 1.0 and stalled["step"] == 4
        assert any("time.sleep(self.hang)" in line for line in stalled["stack"]), stalled["stack"]
        assert ls_state(workdir, run_dir) == "stalled" == status_state(workdir, run_dir)
        shown = run_cli("show", run_dir, cwd=workdir).stdout
        assert re.search(
            r"stalled: no step for \S+ \(stalled after 1.0s\), at step 4: tiny\.py:\d+ in __getitem__", shown
        )
    finally:
        send_command(run_dir, "force")  # the read never returns: only a forced end stops it
    wait_until(lambda: read_json(run_dir / "summary.json") is not None, 30, "the forced end")
    assert ls_state(workdir, run_dir) == "forced"


def test_a_read_slow_once_is_stalled_then_running_again_and_the_run_finishes(workdir: Path) -> None:
    done = run_cli("run", stalling(workdir, 2.5, stall_after=1.0), "--headless", cwd=workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(
        r"^stalled: no step for \S+ \(stalled after 1.0s\), at step 4: tiny\.py:\d+ in __getitem__", out, re.M
    )
    assert re.search(r"^state: running again at step \d+ \(moving again after \S+\)", out, re.M), out
    assert out.index("stalled:") < out.index("running again") < out.index("finished: completed")


def test_the_limit_is_ten_times_the_longest_wait_never_under_five_minutes_unless_set() -> None:
    automatic = StallWatch(lambda ev: None, lambda: 0, lambda: False, lambda: 0)
    assert [automatic.limit(w) for w in (0.0, 0.5, 29.9, 30.0, 45.0)] == [300.0, 300.0, 300.0, 300.0, 450.0]
    assert StallWatch(lambda ev: None, lambda: 0, lambda: False, lambda: 0, after=2.0).limit(100.0) == 2.0


def test_the_automatic_limit_is_never_under_five_minutes(workdir: Path) -> None:
    """Without [run] stall_after, a 2.5 s wait in a run of fast steps is not a stall."""
    done = run_cli("run", stalling(workdir, 2.5), "--headless", cwd=workdir)
    assert done.returncode == 0 and "stalled" not in done.stdout, done.stdout


def test_a_frozen_process_is_stalled_in_ls_until_it_moves_again(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGSTOP: the process cannot say it is stuck, but its machine samples stop coming."""
    monkeypatch.setenv("TUILOOP_SYSTEM_INTERVAL", "0.2")
    monkeypatch.setenv("TUILOOP_FROZEN_S", "2")
    run_dir = start_detached(write_spec(workdir, run={"epochs": 10_000}), cwd=workdir)
    wait_until(lambda: any(e["event"] == "system_sample" for e in events(run_dir)), 60, "a machine sample")
    pid = read_json(run_dir / "run.json")["pid"]  # type: ignore[index]
    try:
        assert ls_state(workdir, run_dir) == "running"
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: ls_state(workdir, run_dir) == "stalled", 20, "ls to call the frozen run stalled")
        assert status_state(workdir, run_dir) == "stalled"
        os.kill(pid, signal.SIGCONT)
        wait_until(lambda: ls_state(workdir, run_dir) == "running", 20, "ls to see it move again")
    finally:
        os.kill(pid, signal.SIGCONT)
        send_command(run_dir, "force")
