"""``tuiloop.track`` around a loop of the user's own: a full run directory that ``show`` and ``ls``
read, steered through its control socket as ``tuiloop attach`` steers it, ended as failed by an
exception, and forced or stopped by signals like any run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import cli_env, run_cli
from runs_support import answers, events, last_step, summary, wait_until
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tuiloop
from tuiloop.rundir.control import send_command
from tuiloop.rundir.eventlog import read_events
from tuiloop.rundir.layout import read_json
from tuiloop.rundir.lock import is_locked
from tuiloop.runner.opening import RunExists
from tuiloop.runner.track import Run


def seed_loop(
    run_dir: Path, num_epochs: int = 3, delay: float = 0.0, saves: list[int] | None = None, **track: Any
) -> Run:
    """The seed's plain training loop (DataLoader, loss.item() every step, validation and a
    best-model save each epoch), with the tuiloop.track calls added. ``saves`` collects the steps
    at which save_requested() said yes."""
    torch.manual_seed(0)
    x, y = torch.randn(160, 4), torch.randint(0, 3, (160,))
    train_loader = DataLoader(TensorDataset(x[:128], y[:128]), batch_size=16, shuffle=True)
    val_loader = DataLoader(TensorDataset(x[128:], y[128:]), batch_size=32)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    best_val_loss = float("inf")
    step = 0
    with tuiloop.track(
        run_dir,
        config={"lr": 0.01, "epochs": num_epochs},
        epochs=num_epochs,
        steps_per_epoch=len(train_loader),
        **track,
    ) as run:
        for epoch in range(1, num_epochs + 1):
            model.train()
            for batch_x, batch_y in train_loader:
                time.sleep(delay)
                loss = criterion(model(batch_x), batch_y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
                run.log(step, train_loss=loss.item(), lr=optimizer.param_groups[0]["lr"], samples=len(batch_x))
                run.wait_if_paused()
                if run.should_stop():
                    break
                if run.save_requested():
                    path = run_dir / "checkpoints" / f"manual-step{step:07d}.pt"
                    torch.save(model.state_dict(), path)
                    run.checkpoint(path)
                    if saves is not None:
                        saves.append(step)
            if run.should_stop():
                break
            model.eval()
            val_loss = 0.0
            with torch.no_grad():
                for batch_x, batch_y in val_loader:
                    val_loss += criterion(model(batch_x), batch_y).item()
            val_loss /= len(val_loader)
            run.validated(epoch, val_loss=val_loss)
            if val_loss < best_val_loss:
                best_val_loss = val_loss
                torch.save(model.state_dict(), run_dir / "checkpoints" / "best.pt")
                run.checkpoint(run_dir / "checkpoints" / "best.pt", tag="best")
    return run


def test_a_tracked_loop_is_a_full_run_directory_that_show_and_ls_read(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "mine"
    run = seed_loop(run_dir)
    f = run.finished
    assert f is not None and (f.status, f.epochs_done, f.step) == ("completed", 3, 24)
    assert {p.name for p in run_dir.iterdir()} >= {
        "run.json",
        "run.lock",
        "events.jsonl",
        "summary.json",
        "checkpoints",
    }
    assert (run_dir.stat().st_mode & 0o777) == 0o700 and (run_dir / "checkpoints" / "best.pt").is_file()
    assert not (run_dir / "control.sock").exists() and not is_locked(run_dir)
    info = read_json(run_dir / "run.json")
    assert (
        info is not None
        and info["name"] == "mine"
        and info["config"] == {"lr": 0.01, "epochs": 3}
        and info["pid"] == os.getpid()
        and info["session"]
    )
    assert "torch" in info["versions"] and info["started"] > 0
    s = summary(run_dir)
    assert (
        s is not None
        and s["status"] == "completed"
        and (s["epochs"], s["epochs_done"], s["steps"]) == (3, 3, 24)
        and set(s["final_metrics"]) == {"train_loss", "val_loss"}
    )
    evs, tail = read_events(run_dir)
    assert tail.skipped == 0 and evs[0].kind == "run_started" and evs[-1].kind == "finished"
    assert evs[0].commands == ["pause", "resume", "save", "stop", "force"], "the monitor offers the keys the loop obeys"
    assert evs[0].session == info["session"] and evs[0].epochs == 3 and evs[0].steps_per_epoch == 8  # type: ignore[attr-defined]
    steps = [e for e in evs if e.kind == "train_steps"]
    assert [s for e in steps for s in range(e.first_step, e.first_step + len(e.losses))] == list(range(1, 25))  # type: ignore[attr-defined]
    assert [e.epoch for e in evs if e.kind == "validated"] == [1, 2, 3]  # type: ignore[attr-defined]
    shown = run_cli("show", run_dir, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert (
        "run mine started" in shown.stdout
        and "epoch 3/3  train_loss" in shown.stdout
        and "finished: completed" in shown.stdout
    )
    listed = run_cli("ls", tmp_path / "runs", cwd=tmp_path)
    assert "mine" in listed.stdout and "finished" in listed.stdout and "3/3" in listed.stdout
    resumed = run_cli("run", "--resume", run_dir, cwd=tmp_path)
    assert resumed.returncode == 2 and "tuiloop.track" in resumed.stderr, resumed.stderr


def test_a_tracked_loop_obeys_pause_save_and_stop_from_its_control_socket(tmp_path: Path) -> None:
    """What the keys of ``tuiloop attach RUN_DIR`` send: p holds the loop still, s saves once, q stops it."""
    run_dir = tmp_path / "live"
    saves: list[int] = []
    result: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: result.update(run=seed_loop(run_dir, num_epochs=500, delay=0.005, saves=saves)), daemon=True
    )
    thread.start()
    try:
        wait_until(lambda: answers(run_dir), 30, "the run's control socket")
        wait_until(lambda: last_step(run_dir) >= 3, 30, "the first steps")
        assert send_command(run_dir, "pause") == {"ok": True}
        wait_until(
            lambda: any(e["event"] == "state" and e["state"] == "paused" for e in events(run_dir)), 10, "the pause"
        )
        held = last_step(run_dir)
        time.sleep(0.5)  # a span in which no step may come: the stillness is what is checked
        assert last_step(run_dir) == held, "the loop went on while paused"
        assert send_command(run_dir, "resume") == {"ok": True}
        wait_until(lambda: last_step(run_dir) > held, 10, "steps after the resume")
        assert send_command(run_dir, "save") == {"ok": True}
        wait_until(
            lambda: [e for e in events(run_dir) if e["event"] == "checkpoint" and e["tag"] == "manual"],
            10,
            "the manual checkpoint",
        )
        assert send_command(run_dir, "stop") == {"ok": True}
        thread.join(30)
    finally:
        if thread.is_alive():
            send_command(run_dir, "stop")
            thread.join(30)
    assert len(saves) == 1 and (run_dir / "checkpoints" / f"manual-step{saves[0]:07d}.pt").is_file()
    (manual,) = [e for e in events(run_dir) if e["event"] == "checkpoint" and e["tag"] == "manual"]
    assert manual["path"] == f"checkpoints/manual-step{saves[0]:07d}.pt" and manual["step"] == saves[0]
    states = [e["state"] for e in events(run_dir) if e["event"] == "state"]
    assert states == ["paused", "running", "stopping"]
    assert result["run"].finished.status == "stopped"
    s = summary(run_dir)
    assert s is not None and (s["status"], s["reason"]) == ("stopped", "stopped by request")
    assert not is_locked(run_dir) and not (run_dir / "control.sock").exists()


def test_steps_logged_with_gaps_are_written_as_runs_of_consecutive_steps(tmp_path: Path) -> None:
    run_dir = tmp_path / "strided"
    with tuiloop.track(run_dir, epochs=2, steps_per_epoch=20, log_interval=60) as run:
        for step in range(5, 41, 5):  # epoch 1: every 5th of 20 steps, then epoch 2 likewise
            run.log(step, train_loss=1.0 / step, lr=0.1)
            if step % 20 == 0:
                run.validated(step // 20, val_loss=1.0 / step)
        run.log(41, 0.5)
        run.log(42, 0.5)
        run.log(43, 0.25)
        run.log(50, 0.125)
    steps = [e for e in events(run_dir) if e["event"] == "train_steps"]
    assert [(e["epoch"], e["first_step"], len(e["losses"]), e["step_in_epoch"]) for e in steps] == [
        (1, 5, 1, 5), (1, 10, 1, 10), (1, 15, 1, 15), (1, 20, 1, 20),
        (2, 25, 1, 5), (2, 30, 1, 10), (2, 35, 1, 15), (2, 40, 1, 20),
        (3, 41, 3, 3), (3, 50, 1, 10),
    ]  # fmt: skip
    assert steps[0]["losses"] == [0.2] and steps[-2]["losses"] == [0.5, 0.5, 0.25]
    validated = [e for e in events(run_dir) if e["event"] == "validated"]
    assert [(e["epoch"], e["step"]) for e in validated] == [(1, 20), (2, 40)]
    assert validated[0]["metrics"]["train_loss"] == pytest.approx((1 / 5 + 1 / 10 + 1 / 15 + 1 / 20) / 4)
    assert run.finished is not None and (run.finished.status, run.finished.step, run.finished.epochs_done) == (
        "completed",
        50,
        2,
    )


def test_an_exception_in_the_with_block_ends_the_run_as_failed_and_goes_on_up(tmp_path: Path) -> None:
    run_dir = tmp_path / "broken"
    with pytest.raises(ValueError, match="bad batch"), tuiloop.track(run_dir, epochs=3) as run:
        for step in range(1, 6):
            run.log(step, train_loss=torch.tensor(0.5))  # a tensor is read when written
            if step == 4:
                raise ValueError("bad batch")
    evs = events(run_dir)
    failed = [e for e in evs if e["event"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"] == "ValueError: bad batch" and "test_track.py" in failed[0]["where"]
    assert "raise ValueError" in failed[0]["traceback"]
    assert evs[-1]["event"] == "finished" and evs[-1]["status"] == "failed" and evs[-1]["step"] == 4
    assert [x for e in evs if e["event"] == "train_steps" for x in e["losses"]] == [0.5] * 4
    s = summary(run_dir)
    assert s is not None and (s["status"], s["reason"]) == ("failed", "ValueError in the loop")
    assert not is_locked(run_dir)
    shown = run_cli("show", run_dir, cwd=tmp_path)
    assert "error: ValueError: bad batch" in shown.stdout and "finished: failed" in shown.stdout


def test_a_live_run_directory_cannot_be_tracked_twice(tmp_path: Path) -> None:
    run_dir = tmp_path / "busy"
    with tuiloop.track(run_dir) as first:
        with pytest.raises(RuntimeError, match="is a live run"):
            tuiloop.track(run_dir)
        first.log(1, 0.5)
    assert summary(run_dir)["status"] == "completed"  # type: ignore[index]
    assert [e["event"] for e in events(run_dir)] == ["run_started", "train_steps", "finished"], (
        "the refused one wrote nothing"
    )


def test_a_finished_run_directory_is_continued_only_when_asked(tmp_path: Path) -> None:
    """Running a script again with the same run_dir must not merge two runs into one log: it is
    refused with both choices named, and resume=True continues the run."""
    run_dir = tmp_path / "twice"
    with tuiloop.track(run_dir, name="first", epochs=1) as run:
        run.log(1, 1.0)
        run.validated(1, val_loss=1.0)
    run.close()  # closing again is harmless
    started = read_json(run_dir / "run.json")["started"]  # type: ignore[index]
    logged = (run_dir / "events.jsonl").read_bytes()
    with pytest.raises(RunExists) as refused:
        tuiloop.track(run_dir, epochs=2)
    text = str(refused.value)
    assert str(run_dir) in text and "completed run" in text
    assert "resume=True" in text and "run_dir=None" in text, "both choices are named"
    assert (run_dir / "events.jsonl").read_bytes() == logged and summary(run_dir)["status"] == "completed"  # type: ignore[index]
    assert not is_locked(run_dir), "the refused call let go of the lock"
    with tuiloop.track(run_dir, epochs=2, resume=True) as run:
        assert summary(run_dir) is None, "a continued run is live again"
        run.log(2, 0.5)
        run.validated(2, val_loss=0.5)
    info = read_json(run_dir / "run.json")
    assert info is not None and info["name"] == "first" and info["started"] == started and len(info["resumes"]) == 1
    assert [e["event"] for e in events(run_dir)].count("run_started") == 2
    assert summary(run_dir)["status"] == "completed"  # type: ignore[index]


def test_without_a_run_dir_each_run_gets_a_fresh_directory_named_for_the_script(tmp_path: Path) -> None:
    """``track()`` with no run_dir, as a script run twice calls it: two runs, two directories
    under ./runs, named as spec runs are (<name>-<timestamp>-<hex>)."""
    script = tmp_path / "train_mlp.py"
    script.write_text("import tuiloop\nwith tuiloop.track(epochs=1) as run:\n    run.log(1, 0.5)\nprint(run.run_dir)\n")
    made = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, script], cwd=tmp_path, capture_output=True, text=True, env=cli_env(), timeout=60
        )
        assert done.returncode == 0, done.stderr
        made.append(Path(done.stdout.strip()))
    assert made[0] != made[1] and all(p.parent == tmp_path / "runs" for p in made)
    assert all(re.fullmatch(r"train_mlp-\d{8}-\d{6}-[0-9a-f]{4}", p.name) for p in made), made
    assert [summary(p)["steps"] for p in made] == [1, 1]  # type: ignore[index]
    with pytest.raises(ValueError, match="run_dir=None always starts a fresh one"):
        tuiloop.track(resume=True)


SCRIPT = """
import sys, time, tuiloop
run = tuiloop.track(sys.argv[1], epochs=1000, handle_signals=True)
step = 0
while not run.should_stop():
    step += 1
    run.log(step, train_loss=1.0 / step)
    time.sleep(0.002)
run.close()
print("closed", run.finished.status, flush=True)
"""


def end_a_tracked_loop(
    tmp_path: Path, end: Callable[[subprocess.Popen, Path], None]
) -> tuple[int, str, str, dict[str, Any], Path]:
    """A tracked loop with handle_signals, ended by ``end(process, run_dir)`` once it runs;
    (exit status, stdout, stderr, summary, run directory)."""
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent(SCRIPT))
    run_dir = tmp_path / "runs" / "mine"
    proc = subprocess.Popen(
        [sys.executable, script, run_dir],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        wait_until(lambda: answers(run_dir) and last_step(run_dir) > 0, 60, "the loop to run")
        end(proc, run_dir)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    s = summary(run_dir)
    assert s is not None and not is_locked(run_dir)
    return proc.returncode, out, err, s, run_dir


def test_ctrl_c_stops_a_tracked_loop(tmp_path: Path) -> None:
    """With handle_signals, Ctrl+C is a stop the loop sees."""
    code, out, err, s, _ = end_a_tracked_loop(tmp_path, lambda proc, _: proc.send_signal(signal.SIGINT))
    assert code == 0 and "closed stopped" in out, err
    assert (s["status"], s["reason"]) == ("stopped", "interrupted (SIGINT)")


def test_the_force_command_ends_a_tracked_loops_process(tmp_path: Path) -> None:
    """The force command (a monitor's second Ctrl+C) ends the process at once, with the run recorded as forced."""

    def force(_: subprocess.Popen, run_dir: Path) -> None:
        assert send_command(run_dir, "force") == {"ok": True}

    code, out, err, s, run_dir = end_a_tracked_loop(tmp_path, force)
    assert code == 130 and "closed" not in out, err
    assert s["status"] == "forced" and events(run_dir)[-1]["status"] == "forced"
