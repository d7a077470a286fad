"""Runs on several processes: ``tuiloop run SPEC --nproc-per-node 2`` (torchrun, DDP, gloo on the CPU).

Real two-rank runs: metrics equal to a one-process evaluation, keys through rank 0's control
socket agreed by both ranks, a rank that raises, a rank killed, exact resume, two "nodes" on
localhost, SIGHUP to the launcher, Ctrl+C in the foreground. A launch costs a few seconds, so
each test shares what it can.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import tiny
import torch
from conftest import assert_same_weights, cli_env, load_ckpt, only_run, run_cli, write_spec
from runs_support import (
    answers,
    events,
    last_step,
    read_stderr_until,
    run_processes,
    start_detached,
    summary,
    wait_until,
)

from tuiloop.rundir.control import send_command
from tuiloop.rundir.state import run_state

TWO = ("--nproc-per-node", "2")
SLOW = dict(run={"epochs": 500, "log_interval": 0.05}, model={"delay": 0.02})


def rank_process(rank: int) -> psutil.Process:
    for p in psutil.process_iter(["cmdline"]):
        if "_rank" in " ".join(p.info["cmdline"] or []):
            try:
                if p.environ().get("RANK") == str(rank):
                    return p
            except psutil.Error:
                continue
    raise AssertionError(f"no rank {rank} process")


def one_process_eval(ckpt_path: Path) -> tuple[float, float]:
    """val_loss and val_acc of a checkpoint on the whole validation split, in this process."""
    model = tiny.MLP(4, 3, 16)
    model.load_state_dict(load_ckpt(ckpt_path)["model_state_dict"])
    x, y = tiny.classes()[1].tensors
    with torch.no_grad():
        out = model(x)
    return torch.nn.functional.cross_entropy(out, y).item(), (out.argmax(1) == y).float().mean().item()


# ---- a whole run ---------------------------------------------------------------------------------
def test_a_two_process_run_reports_what_one_process_would(workdir: Path) -> None:
    done = run_cli("run", write_spec(workdir, run={"epochs": 3}), "--headless", *TWO, cwd=workdir)
    assert done.returncode == 0, done.stderr
    run_dir = only_run(workdir / "runs")
    assert (
        "distributed: 2 processes (gloo) on" in done.stdout
        and "batch 16 per process, 32 per optimizer step in all" in done.stdout
    )
    log = events(run_dir)
    (started,) = [e for e in log if e["event"] == "run_started"]
    assert (started["world_size"], started["backend"], started["nodes"], started["steps_per_epoch"]) == (
        2,
        "gloo",
        [socket.gethostname()],
        4,
    )
    vals = [e for e in log if e["event"] == "validated"]
    assert [v["epoch"] for v in vals] == [1, 2, 3]
    # validation covers every sample once, across both ranks: the numbers of one process
    loss, acc = one_process_eval(run_dir / "checkpoints" / "last.pt")
    assert vals[-1]["metrics"]["val_loss"] == pytest.approx(loss, rel=1e-5) and vals[-1]["metrics"][
        "val_acc"
    ] == pytest.approx(acc)
    ck = load_ckpt(run_dir / "checkpoints" / "last.pt")
    assert list(ck["model_state_dict"]) == list(tiny.MLP().state_dict()) and (
        ck["world_size"],
        len(ck["rng_states"]),
    ) == (2, 2)
    assert summary(run_dir)["status"] == "completed"
    assert {p.name for p in (run_dir / "ranks").iterdir()} == {"rank-0.log", "rank-1.log"}
    assert not run_processes(run_dir)


# ---- steering: keys reach every rank at the same step ----------------------------------------------
def test_pause_save_resume_and_stop_through_the_control_socket(
    workdir: Path, cleanup: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pause longer than the process-group timeout (5 s here) does not end the run: a
    collective that waited that long would raise in gloo and fail the run."""
    monkeypatch.setenv("TUILOOP_DIST_TIMEOUT", "5")
    run_dir = start_detached(write_spec(workdir, **SLOW), cwd=workdir, extra=TWO)
    cleanup.append(run_dir)
    wait_until(lambda: last_step(run_dir) >= 8, 60, "some steps")
    assert rank_process(1).environ()["TUILOOP_DIST_TIMEOUT"] == "5", "the ranks run with the short timeout"
    t0 = time.monotonic()
    send_command(run_dir, "pause")
    wait_until(
        lambda: [e["state"] for e in events(run_dir) if e["event"] == "state"][-1:] == ["paused"], 10, "the pause"
    )
    assert time.monotonic() - t0 < 1.0, "a command takes effect within a second"
    held = last_step(run_dir)
    time.sleep(7)  # longer than the 5 s timeout of every collective
    assert last_step(run_dir) == held and answers(run_dir)
    send_command(run_dir, "save")
    wait_until(lambda: list((run_dir / "checkpoints").glob("manual-step*.pt")), 10, "the manual save while paused")
    send_command(run_dir, "resume")
    wait_until(lambda: last_step(run_dir) > held + 8, 20, "steps after resuming")
    send_command(run_dir, "stop")
    wait_until(lambda: summary(run_dir), 30, "the stopped run's summary")
    assert summary(run_dir)["status"] == "stopped"
    assert load_ckpt(run_dir / "checkpoints" / "last.pt")["step"] == summary(run_dir)["steps"]
    wait_until(lambda: not run_processes(run_dir), 30, "every process of the run to end")
    assert run_state(run_dir).state == "stopped"


# ---- failures ---------------------------------------------------------------------------------------
def test_a_rank_that_raises_fails_the_run_with_its_error(workdir: Path) -> None:
    spec = write_spec(workdir, run={"epochs": 50}, model={"target": "tiny.py:RankCrash", "rank": 1, "at": 10})
    t0 = time.monotonic()
    done = run_cli("run", spec, "--headless", *TWO, cwd=workdir, timeout=90)
    assert time.monotonic() - t0 < 30
    assert done.returncode == 1
    run_dir = only_run(workdir / "runs")
    s = summary(run_dir)
    assert (s["status"], s["reason"]) == ("failed", "rank 1 failed")
    (failed,) = [e for e in events(run_dir) if e["event"] == "failed"]
    assert failed["error"] == "rank 1: ValueError: rank 1 cannot take this batch"
    assert (
        failed["where"].startswith("rank 1, training, epoch 3, step")
        and "tiny.py:" in failed["where"]
        and failed["where"].endswith("in forward")
    )
    assert any("raise ValueError" in line for line in failed["user_frames"])
    assert "error: rank 1: ValueError: rank 1 cannot take this batch" in done.stdout
    assert not run_processes(run_dir)


def test_a_rank_killed_ends_the_run_without_a_hang_or_orphans(workdir: Path, cleanup: list[Path]) -> None:
    run_dir = start_detached(write_spec(workdir, **SLOW), cwd=workdir, extra=TWO)
    cleanup.append(run_dir)
    wait_until(lambda: last_step(run_dir) >= 8, 60, "some steps")
    t0 = time.monotonic()
    os.kill(rank_process(1).pid, signal.SIGKILL)
    wait_until(lambda: not run_state(run_dir).live, 30, "the run to end")
    assert time.monotonic() - t0 < 30
    assert run_state(run_dir).state in ("failed", "crashed")
    wait_until(lambda: not run_processes(run_dir), 10, "no process of the run left")


# ---- exact resume --------------------------------------------------------------------------------------
def test_a_two_process_run_stopped_mid_epoch_resumes_bitwise(workdir: Path, cleanup: list[Path]) -> None:
    """Steps of 0.3 s make the ranks agree after every step, so the stop lands mid-epoch."""
    spec = write_spec(workdir, run={"epochs": 4, "log_interval": 0.01}, model={"dropout": 0.3})
    ref = run_cli("run", spec, "--headless", *TWO, "--set", "run.out_dir=ref", cwd=workdir)
    assert ref.returncode == 0, ref.stderr
    run_dir = start_detached(spec, "run.out_dir=cut", "model.delay=0.3", cwd=workdir, extra=TWO)
    cleanup.append(run_dir)
    wait_until(lambda: last_step(run_dir) >= 5, 60, "the middle of the second epoch")
    send_command(run_dir, "stop")
    wait_until(lambda: summary(run_dir), 30, "the stop")
    ck = load_ckpt(run_dir / "checkpoints" / "last.pt")
    assert summary(run_dir)["status"] == "stopped" and 0 < ck["batch_in_epoch"] < 4, ck["batch_in_epoch"]
    # an error a rank left in an earlier session (a failed run is resumed too) is not this session's
    stale = run_dir / "ranks" / "rank-1.error.json"
    stale.write_text(
        json.dumps({"rank": 1, "error": "ValueError: from an earlier session", "where": "rank 1, training"})
    )
    resumed = run_cli("run", "--resume", run_dir, "--headless", *TWO, cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    assert not stale.exists()
    want = load_ckpt(only_run(workdir / "ref") / "checkpoints" / "last.pt")
    got = load_ckpt(run_dir / "checkpoints" / "last.pt")
    assert got["step"] == want["step"] == 16
    assert_same_weights(got["model_state_dict"], want["model_state_dict"])
    assert_same_weights(got["optimizer_state_dict"]["state"][0], want["optimizer_state_dict"]["state"][0])
    # on one process it resumes too, and says it is not the same run
    again = run_cli("run", "--resume", run_dir, "--headless", "--set", "run.epochs=5", cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert (
        "warning: this resume is not exact: the checkpoint was written by 2 process(es) and this run has 1"
        in again.stdout
    )


# ---- launching ---------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_meet_through_the_rendezvous_options(workdir: Path) -> None:
    """Two "machines" on localhost: node 0 hosts rank 0 and the run directory; node 1 runs headless."""
    spec = write_spec(workdir, run={"epochs": 2})
    common = [
        "run",
        str(spec),
        "--nproc-per-node",
        "1",
        "--nnodes",
        "2",
        "--rdzv-endpoint",
        f"127.0.0.1:{_free_port()}",
        "--rdzv-id",
        "test",
    ]
    node1 = subprocess.Popen(
        [sys.executable, "-m", "tuiloop", *common, "--node-rank", "1"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(),
    )
    node0 = run_cli(*common, "--node-rank", "0", "--headless", cwd=workdir, timeout=120)
    out1, _ = node1.communicate(timeout=60)
    assert node0.returncode == 0 and node1.returncode == 0, (node0.stderr, out1)
    run_dir = only_run(workdir / "runs")
    (started,) = [e for e in events(run_dir) if e["event"] == "run_started"]
    assert started["world_size"] == 2 and summary(run_dir)["status"] == "completed"
    assert "run tiny started" in node0.stdout and "run tiny started" not in out1  # rank 0's lines on node 0 only
    assert (run_dir / "ranks" / "rank-1.log").is_file()


def test_sighup_to_the_launcher_ends_nothing(workdir: Path, cleanup: list[Path]) -> None:
    spec = write_spec(workdir, run={"epochs": 40, "log_interval": 0.05}, model={"delay": 0.01})
    done = run_cli("run", spec, "--detach", *TWO, cwd=workdir)
    assert done.returncode == 0, done.stderr
    launcher = int(done.stdout.split("(pid ")[1].split(")")[0])
    run_dir = only_run(workdir / "runs")
    cleanup.append(run_dir)
    wait_until(lambda: last_step(run_dir) >= 4, 60, "some steps")
    os.kill(launcher, signal.SIGHUP)
    wait_until(lambda: summary(run_dir), 90, "the run to finish")
    assert summary(run_dir)["status"] == "completed"


def ctrl_c_in_the_foreground(workdir: Path, presses: int) -> tuple[int, str, str, Path]:
    """A two-rank run in the foreground of a terminal, and the terminal's Ctrl+C ``presses`` times,
    each after the one before was heard; (exit status, stdout, stderr, run directory)."""
    spec = write_spec(
        workdir, run={"epochs": 500, "log_interval": 0.05}, model={"delay": 0.5 if presses == 2 else 0.02}
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuiloop", "run", str(spec), "--headless", *TWO],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        start_new_session=True,
    )
    heard = ""
    try:
        run_dir = wait_until(
            lambda: next(iter((workdir / "runs").glob("*")), None) if (workdir / "runs").is_dir() else None,
            60,
            "the run directory",
        )
        wait_until(lambda: last_step(run_dir) >= 2, 60, "some steps")
        os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl+C reaches the foreground group
        for _ in range(presses - 1):  # the next press once the first was heard, within the step
            heard += read_stderr_until(proc, "interrupt: stopping every rank", 10, "the first Ctrl+C to be heard")
            os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    wait_until(lambda: not run_processes(run_dir), 10, "no process of the run left")
    return proc.returncode, out, heard + err, run_dir


def test_ctrl_c_in_the_foreground_stops_every_rank(workdir: Path) -> None:
    code, out, err, run_dir = ctrl_c_in_the_foreground(workdir, 1)
    s = summary(run_dir)
    assert code == 0 and s["status"] == "stopped", (out, err)
    assert load_ckpt(run_dir / "checkpoints" / "last.pt")["step"] == s["steps"]
    assert "interrupt: stopping every rank" in err


def test_a_second_ctrl_c_in_the_foreground_forces_every_rank(workdir: Path) -> None:
    """The second press comes within a step of 0.5 s: before the graceful stop can finish."""
    code, out, err, run_dir = ctrl_c_in_the_foreground(workdir, 2)
    assert code == 130 and summary(run_dir)["status"] == "forced", (out, err)
    assert "interrupt: stopping every rank" in err
