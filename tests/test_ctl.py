"""``tuiloop ctl``, ``status`` and ``ls --json``: a live run steered and read from a script, as a
user's script does it (the real command, against a real detached run)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, cli_env, run_cli, write_spec
from runs_support import answers, events, kill_run, last_step, run_pid, start_detached, wait_live, wait_until

from tuiloop.rundir.comparison import RunHistory
from tuiloop.rundir.eventlog import read_events


def ctl(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess:
    return run_cli("ctl", *args, cwd=cwd)


def status(cwd: Path, run: str | Path) -> dict[str, Any]:
    done = run_cli("status", run, "--json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def states(run_dir: Path) -> list[tuple[str, int]]:
    return [(e["state"], e["step"]) for e in events(run_dir) if e["event"] == "state"]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """One detached run, long enough for every test of the module (its folder, its run directory)."""
    folder = tmp_path_factory.mktemp("ctl")
    shutil.copy(FIXTURES / "tiny.py", folder / "tiny.py")
    spec = write_spec(folder, run={"epochs": 500}, model={"delay": 0.02})
    run_dir = start_detached(spec, cwd=folder)
    try:
        wait_live(run_dir)
        wait_until(lambda: last_step(run_dir) >= 2, 60, "the first steps")
        yield folder, run_dir
    finally:
        kill_run(run_dir)


def test_ctl_pauses_saves_resumes_and_stops_a_live_run_and_status_says_so(live: tuple[Path, Path]) -> None:
    folder, run_dir = live
    name = run_dir.name[-4:]  # any unique part of its name, as `show` takes it

    s = status(folder, name)
    assert (s["version"], s["state"], s["live"], s["name"], s["run_dir"]) == (
        1,
        "running",
        True,
        run_dir.name,
        str(run_dir),
    )
    assert (s["epochs"], s["steps_per_epoch"], s["steps_total"], s["lr"]) == (500, 8, 4000, 0.01)
    assert (s["pid"], s["host"], s["commands"]) == (run_pid(run_dir), socket.gethostname(), None)
    assert s["step"] >= 2 and s["since_last_step_s"] is not None and s["eta_s"] > 0

    done = ctl(folder, name, "pause")
    assert done.returncode == 0, done.stderr
    m = re.fullmatch(r"paused at step (\d+)\n", done.stdout)
    assert m, done.stdout
    assert states(run_dir) == [("paused", int(m.group(1)))], "the ack is what the log says"
    again = ctl(folder, name, "pause")
    assert (again.returncode, again.stdout) == (0, f"already paused (at step {m.group(1)})\n"), again.stderr
    assert len(states(run_dir)) == 1, "a pause already in effect sends nothing"
    s = status(folder, run_dir)
    assert (s["state"], s["step"]) == ("paused", int(m.group(1)))
    assert "paused" in run_cli("status", name, cwd=folder).stdout.splitlines()[0]
    (row,) = json.loads(run_cli("ls", "--json", cwd=folder).stdout)
    assert (row["state"], row["run_dir"], row["name"], row["epochs"]) == ("paused", str(run_dir), run_dir.name, 500)

    done = ctl(folder, name, "save")
    step = int(m.group(1))
    assert (done.returncode, done.stdout) == (0, f"saved checkpoints/manual-step{step:07d}.pt at step {step}\n")
    assert (run_dir / "checkpoints" / f"manual-step{step:07d}.pt").is_file()

    done = ctl(folder, name, "resume")
    assert (done.returncode, done.stdout) == (0, f"resumed at step {step}\n"), done.stderr
    wait_until(lambda: last_step(run_dir) > step, 30, "steps after the resume")
    done = ctl(folder, name, "resume")
    assert done.returncode == 0 and done.stdout.startswith("not paused (running at step"), done.stdout


def test_ctl_on_a_frozen_run_times_out_with_its_own_exit_status(live: tuple[Path, Path]) -> None:
    """SIGSTOP: the kernel takes the connection, nobody answers: exit 3 within --timeout, one line."""
    folder, run_dir = live
    pid = run_pid(run_dir)
    os.kill(pid, signal.SIGSTOP)
    try:
        done = ctl(folder, run_dir, "save", "--timeout", "1")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert done.stderr.startswith("tuiloop: error: ") and len(done.stderr.splitlines()) == 1, done.stderr
    assert "within 1s" in done.stderr and done.stdout == ""
    wait_until(lambda: answers(run_dir), 30, "the run to answer again")


def test_ctl_refuses_with_an_exit_status_that_says_why(live: tuple[Path, Path], tmp_path: Path) -> None:
    folder, run_dir = live
    done = ctl(folder, "no-such-run", "pause")
    assert done.returncode == 2 and "no run directory 'no-such-run'" in done.stderr, done.stderr
    done = ctl(folder, run_dir, "jump")
    assert done.returncode == 2 and "invalid choice: 'jump'" in done.stderr, done.stderr
    done = ctl(folder, run_dir, "pause", "optimizer.lr=1")
    assert done.returncode == 2 and "takes no KEY=VALUE" in done.stderr, done.stderr


def test_ctl_set_changes_settings_from_the_next_step_and_refuses_what_may_not_change(live: tuple[Path, Path]) -> None:
    folder, run_dir = live
    done = ctl(
        folder, run_dir, "set", "optimizer.lr=0.005", "train.gradient_clip_val=1.0", "checkpoint.every_n_epochs=0"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(" from step ")[0] for line in lines] == [
        "optimizer.lr: 0.01 -> 0.005",
        "train.gradient_clip_val: 0.0 -> 1.0",
        "checkpoint.every_n_epochs: 0 -> 0",
    ], done.stdout
    changed = {e["key"]: e for e in events(run_dir) if e["event"] == "setting_changed" and e["source"] == "ctl set"}
    assert (changed["optimizer.lr"]["old"], changed["optimizer.lr"]["new"]) == (0.01, 0.005)
    step = changed["optimizer.lr"]["step"]
    assert lines[0].endswith(f"from step {step + 1}")
    after = lambda: [e for e in events(run_dir) if e["event"] == "train_steps" and e["first_step"] > step]  # noqa: E731
    wait_until(lambda: after(), 30, "a step line that starts after the change")
    later = after()
    assert later and {e["lr"] for e in later} == {0.005}, "the new rate from the next step"
    assert status(folder, run_dir)["lr"] == 0.005

    refused = {
        "run.seed=1": "[run] seed: it cannot change while the run trains, nor on resume: the data order",
        "run.device=cpu": "[run] device: it may change on resume but not live: the run reads it only when it starts",
        "run.epohcs=3": "'epohcs' is not a key of [run]. Did you mean 'epochs'?",
        "optimzer.lr=1": "ctl set optimzer.lr=1: there is no section [optimzer]. Did you mean 'optimizer'?",
        "optimizer.weight_decy=0.1": "Adam has no setting 'weight_decy'; did you mean 'weight_decay'?",
        "early_stopping.patience=2": "the run has no [early_stopping], and one cannot be added while it trains",
        "run.epochs=0": "[run] epochs: must be at least 1, got 0",
        "model.hidden=8": "[model] hidden: it cannot change while the run trains, nor on resume",
        "optimizer.lr=abc": "[optimizer] lr: 'abc' is not a number (lr = 0.01 in the run's spec)",
        "scheduler.gamma=0.5": "[scheduler] gamma: the run has no [scheduler], and one cannot be added while it trains",
    }
    for item, why in refused.items():
        done = ctl(folder, run_dir, "set", item)
        assert done.returncode == 2, (item, done.stdout, done.stderr)
        assert why in done.stderr and len(done.stderr.splitlines()) == 1, (item, done.stderr)
    wait_until(lambda: status(folder, run_dir)["epochs_done"] >= 1, 60, "an epoch done")
    done_epochs = status(folder, run_dir)["epochs_done"]
    done = ctl(folder, run_dir, "set", f"run.epochs={done_epochs}")  # the run takes it or refuses it, itself
    assert done.returncode == 2 and "epochs are done already: set more, or end the run" in done.stderr, done.stderr
    assert status(folder, run_dir)["lr"] == 0.005, "a refused setting changes nothing"


def test_ctl_stop_waits_for_the_end_then_the_run_is_not_live(live: tuple[Path, Path]) -> None:
    folder, run_dir = live
    epochs = status(folder, run_dir)["epoch"] + 15  # run.epochs set live is kept by the checkpoint, for a resume
    done = ctl(folder, run_dir, "set", f"run.epochs={epochs}")
    assert done.returncode == 0 and done.stdout.startswith(f"run.epochs: 500 -> {epochs} from step "), done.stderr
    assert status(folder, run_dir)["epochs"] == epochs
    assert ctl(folder, run_dir, "save").returncode == 0  # mid-epoch: its checkpoint names the epoch in progress
    done = ctl(folder, run_dir, "stop", "--wait")
    assert done.returncode == 0, done.stderr
    history = RunHistory(run_dir)
    history.apply(read_events(run_dir)[0])
    ended_at = status(folder, run_dir)
    assert (history.epochs_done, history.epochs) == (ended_at["epochs_done"], epochs), "compare says what ls does"
    stopping, ended = done.stdout.splitlines()
    assert re.fullmatch(r"stopping at step \d+ \(stopped by request\)", stopping), done.stdout
    assert re.fullmatch(r"stopped at step \d+", ended), done.stdout
    done = ctl(folder, run_dir, "pause")
    assert done.returncode == 1 and "is not live: it ended (stopped: stopped by request)" in done.stderr
    s = status(folder, run_dir)
    assert (s["state"], s["live"], s["reason"], s["eta_s"], s["since_last_step_s"]) == (
        "stopped",
        False,
        "stopped by request",
        None,
        None,
    )
    (row,) = json.loads(run_cli("ls", "--json", cwd=folder).stdout)
    assert row["state"] == "stopped" and row["steps"] == s["step"]
    assert json.loads(run_cli("ls", "--json", "--state", "crashed", cwd=folder).stdout) == []
    assert row["epochs"] == epochs

    # resumed without a spec or --set: the settings changed live go on (run.epochs, and the learning rate)
    done = run_cli("run", "--resume", run_dir, "--headless", cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    s = status(folder, run_dir)
    assert (s["state"], s["epochs_done"], s["epochs"]) == ("finished", epochs, epochs)
    resumed = [e for e in events(run_dir) if e["event"] == "run_started"][-1]
    assert resumed["epochs"] == epochs
    after = [e for e in events(run_dir) if e["event"] == "train_steps" and e["time"] > resumed["time"]]
    assert after and {e["lr"] for e in after} == {0.005}


TRACKED = """
import sys, time, tuiloop
run = tuiloop.track(sys.argv[1], epochs=1000)
step = 0
while not run.should_stop():
    step += 1
    run.log(step, train_loss=1.0 / step)
    time.sleep(0.005)
run.close()
"""


def test_ctl_refuses_what_a_tracked_loop_does_not_obey(tmp_path: Path) -> None:
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent(TRACKED))
    run_dir = tmp_path / "runs" / "mine"
    proc = subprocess.Popen([sys.executable, script, run_dir], cwd=tmp_path, env=cli_env())
    try:
        wait_until(lambda: answers(run_dir) and last_step(run_dir) > 0, 60, "the loop to run")
        done = ctl(tmp_path, "mine", "stop-after-epoch")
        assert done.returncode == 2, done.stderr
        assert "does not obey stop-after-epoch; it obeys pause, resume, stop, save, force" in done.stderr
        assert status(tmp_path, "mine")["commands"] == ["pause", "resume", "save", "stop", "force"]
        done = ctl(tmp_path, "mine", "set", "optimizer.lr=0.1")
        assert done.returncode == 2 and "(tuiloop.track): its settings are your code's" in done.stderr, done.stderr
        done = ctl(tmp_path, "mine", "stop")
        assert done.returncode == 0 and done.stdout.startswith("stopping at step"), done.stderr
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
