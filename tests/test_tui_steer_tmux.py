"""Steering a real run from the monitor in a real terminal (tmux): the learning rate halved and
doubled with ``-`` and ``+`` (logged, and kept by a resume), stop after this epoch with ``e``, suspend with ``P`` and
resume with ``R`` without leaving the monitor; ``show`` lists every key press with its step."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import DEMOS, run_cli
from runs_support import TUILOOP, Tmux, ended, events, summary, wait_until

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


def steady_spec(workdir: Path, epochs: int = 5000) -> Path:
    """The digits demo with a learning rate no scheduler moves (so a change is the key's alone)."""
    spec = workdir / "steady.toml"
    spec.write_text(
        f'[run]\nname = "steady"\nout_dir = "{workdir / "runs"}"\nseed = 0\ndevice = "cpu"\nepochs = {epochs}\n'
        f'[model]\ntarget = "{DEMOS / "models.py"}:MLP"\nin_features = 64\nout_features = 10\nhidden = 64\n'
        f'[data]\ntarget = "{DEMOS / "data.py"}:digits"\nbatch_size = 64\nval_fraction = 0.2\n'
        '[loss]\ntarget = "CrossEntropyLoss"\n[optimizer]\ntarget = "AdamW"\nlr = 1e-3\n'
        '[scheduler]\ntarget = "StepLR"\ninterval = "epoch"\nstep_size = 100000\n'
        "[checkpoint]\nbest = false\nlast = true\n"
    )
    return spec


def only_run(out_dir: Path) -> Path:
    return wait_until(
        lambda: next((p for p in out_dir.glob("*") if (p / "run.json").is_file()), None), 60, "the run directory"
    )


def of(evs: list[dict], kind: str) -> list[dict]:
    return [e for e in evs if e["event"] == kind]


def test_minus_then_e_in_a_real_terminal_and_the_halved_lr_survives_a_resume(workdir: Path, tmux: Tmux) -> None:
    term = tmux.new("steer", f"{TUILOOP} run {steady_spec(workdir)}", width=120, height=40)
    tmux.wait_for(term, r"val_acc\s+\d\.\d{4}", 90)
    tmux.send(term, "-")
    tmux.wait_for(term, r"Halve the learning rate\? \(0\.001 -> 0\.0005\)", 10)
    tmux.send(term, "y")
    tmux.wait_for(term, r"learning rate 0\.001 -> 0\.0005 \(command lr_down, step \d+\)", 20)
    tmux.send(term, "+")
    tmux.wait_for(term, r"Double the learning rate\? \(0\.0005 -> 0\.001\)", 10)
    tmux.send(term, "y")
    tmux.wait_for(term, r"learning rate 0\.0005 -> 0\.001 \(command lr_up, step \d+\)", 20)
    tmux.send(term, "-")
    tmux.wait_for(term, r"Halve the learning rate\? \(0\.001 -> 0\.0005\)", 10)
    tmux.send(term, "y")
    wait_until(
        lambda: len([e for e in events(only_run(workdir / "runs")) if e["event"] == "setting_changed"]) == 3,
        20,
        "the third change",
    )
    tmux.send(term, "e")
    screen = tmux.wait_for(term, r"stopped after epoch \d+, as asked", 60)
    assert "STOPPED" in screen
    tmux.send(term, "q")
    tmux.wait_for(term, r"\[exit 0\]", 30)

    run_dir = only_run(workdir / "runs")
    evs = events(run_dir)
    presses = [e for e in of(evs, "setting_changed") if e["key"] == "optimizer.lr"]
    assert [(e["old"], e["new"], e["source"]) for e in presses] == [
        (0.001, 0.0005, "command lr_down"),
        (0.0005, 0.001, "command lr_up"),
        (0.001, 0.0005, "command lr_down"),
    ]
    lr = presses[-1]
    assert all(e["lr"] == 0.0005 for e in of(evs, "train_steps") if e["first_step"] > lr["step"]), (
        "from the next step on"
    )
    (e_key,) = [e for e in of(evs, "setting_changed") if e["key"] == "stop_after_epoch"]
    last_epoch = of(evs, "validated")[-1]["epoch"]
    assert e_key["new"] is True and e_key["epoch"] == last_epoch, (
        "the epoch in progress ends, validated, and the run stops"
    )
    assert max(e["epoch"] for e in of(evs, "train_steps")) == last_epoch
    s = summary(run_dir)
    assert s is not None and s["status"] == "stopped" and s["epochs_done"] == last_epoch

    shown = run_cli(
        "show", run_dir, cwd=workdir
    ).stdout  # piped: the log as lines, the key presses with their step and time
    assert re.search(r"learning rate 0\.001 -> 0\.0005 \(command lr_down, step \d+, \d\d:\d\d:\d\d\)", shown), shown
    assert re.search(rf"stops after epoch {last_epoch} \(step \d+, \d\d:\d\d:\d\d\)", shown), shown

    resumed = run_cli("run", "--resume", run_dir, "--headless", "--set", f"run.epochs={last_epoch + 1}", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    after = events(run_dir)[len(evs) :]
    assert of(after, "run_started")[0]["resumed_from"]
    assert {e["lr"] for e in of(after, "train_steps")} == {0.0005}, "the checkpoint kept the halved learning rate"
    assert of(after, "finished")[0]["status"] == "completed"

    # a new learning rate at resume is the rate it trains at, whatever the keys did before
    evs = events(run_dir)
    again = run_cli(
        "run",
        "--resume",
        run_dir,
        "--headless",
        "--set",
        f"run.epochs={last_epoch + 2}",
        "--set",
        "optimizer.lr=0.002",
        cwd=workdir,
    )
    assert again.returncode == 0, again.stderr
    after = events(run_dir)[len(evs) :]
    assert {e["lr"] for e in of(after, "train_steps")} == {0.002}
    (edit,) = [e for e in of(after, "setting_changed") if e["key"] == "optimizer.lr"]
    assert (edit["old"], edit["new"]) == (0.0005, 0.002), "the change is from the rate it trained at"


def test_p_suspends_to_disk_and_r_resumes_in_the_same_monitor(workdir: Path, tmux: Tmux) -> None:
    term = tmux.new(
        "suspend", f"{TUILOOP} run {steady_spec(workdir)} --set run.out_dir={workdir / 'runs'}", width=120, height=40
    )
    tmux.wait_for(term, r"val_acc\s+\d\.\d{4}", 90)
    run_dir = only_run(workdir / "runs")
    tmux.send(term, "P")
    tmux.wait_for(term, r"Suspend the run to disk\?", 10)
    tmux.send(term, "y")
    tmux.wait_for(term, r"(?s)SUSPENDED.*R Resume", 60)
    s = wait_until(lambda: ended(run_dir), 20, "the run to suspend and close")
    assert s["status"] == "suspended"
    ls = run_cli("ls", workdir / "runs", cwd=workdir).stdout
    assert "suspended" in ls, ls
    shown = run_cli("show", run_dir, cwd=workdir).stdout
    assert f"suspended to disk: `tuiloop run --resume {run_dir}`" in shown, shown
    attach = run_cli("attach", run_dir, cwd=workdir)
    assert (
        attach.returncode != 0
        and "is suspended to disk" in attach.stderr
        and f"tuiloop run --resume {run_dir}" in attach.stderr
    ), attach.stderr
    step = of(events(run_dir), "finished")[-1]["step"]

    tmux.send(term, "R")
    tmux.wait_for(term, rf"resumed at epoch \d+, step {step} from", 90)
    tmux.wait_for(term, r"RUNNING", 30)
    wait_until(
        lambda: any(e["first_step"] > step for e in of(events(run_dir), "train_steps")), 60, "steps after the resume"
    )
    tmux.send(term, "q")
    tmux.wait_for(term, r"Stop the run\?", 10)
    tmux.send(term, "y")
    done = tmux.wait_for(term, r"\[exit 0\]", 60)
    assert "steady: stopped (stopped by request)" in done
    starts = of(events(run_dir), "run_started")
    assert len(starts) == 2 and starts[1]["start_step"] == step, "resumed exactly where it stopped"
