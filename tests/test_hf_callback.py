"""The Hugging Face ``Trainer`` with ``TuiloopCallback``: the real library training a two-layer
GPT-2 (tests/fixtures/hf_trainer.py), its run directory read by ``show``, ``ls`` and ``export``,
steered through its control socket (pause, save, the learning rate against the Trainer's
scheduler, stop after the epoch, a command it does not obey), from an attached monitor in a real
terminal, and by Ctrl+C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, cli_env, run_cli
from runs_support import TUILOOP, Tmux, answers, events, last_step, summary, wait_until

import tuiloop
from tuiloop.engine.commands import obeyed_by
from tuiloop.rundir.control import send_command
from tuiloop.rundir.lock import is_locked

pytest.importorskip("transformers", reason="transformers is not installed (it is in the [test] extra)")
pytest.importorskip("accelerate", reason="accelerate is not installed (it is in the [test] extra)")
pytestmark = pytest.mark.slow  # every test here starts the Trainer in a process of its own

SCRIPT = FIXTURES / "hf_trainer.py"


def start(tmp_path: Path, *options: str) -> tuple[subprocess.Popen, Path, Path]:
    """The fixture's Trainer script in the background: (process, run directory, output folder)."""
    run_dir, out = tmp_path / "runs" / "gpt2", tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, run_dir, out, *options],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    return proc, run_dir, out


def of(evs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in evs if e["event"] == kind]


def logged_steps(evs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Every logged step: its loss, learning rate and grad norm, by step."""
    out = {}
    for e in of(evs, "train_steps"):
        for i, loss in enumerate(e["losses"]):
            out[e["first_step"] + i] = {"loss": loss, "lr": e["lr"], "grad_norm": (e["grad_norms"] or [None])[i]}
    return out


def test_a_trainer_run_writes_a_full_run_directory(tmp_path: Path) -> None:
    proc, run_dir, out = start(tmp_path)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0 and "trained 16" in stdout, stderr[-3000:]
    assert {p.name for p in run_dir.iterdir()} >= {"run.json", "events.jsonl", "summary.json", "checkpoints"}
    assert not is_locked(run_dir) and not (run_dir / "control.sock").exists()
    info = json.loads((run_dir / "run.json").read_text())
    started_at = info["started"]
    assert info["loop"] == "transformers" and info["name"] == "gpt2"
    assert info["config"]["learning_rate"] == 5e-3 and info["config"]["per_device_train_batch_size"] == 8
    assert info["config"]["lr_scheduler_type"] == "linear", "the TrainingArguments, as the Trainer has them"

    evs = events(run_dir)
    (started,) = of(evs, "run_started")
    assert (started["epochs"], started["steps_per_epoch"], started["max_steps"]) == (2, 8, 16)
    assert started["loop"] == "transformers" and started["commands"] == list(obeyed_by("transformers"))
    assert started["num_params"] > 20_000 and started["monitor"] == "val_loss"
    history = json.loads((out / "history.json").read_text())
    steps = logged_steps(evs)
    trainer_logs = {h["step"]: h for h in history if "loss" in h}
    assert sorted(steps) == sorted(trainer_logs) == list(range(2, 17, 2)), "every loss the Trainer logged, at its step"
    for step, h in trainer_logs.items():
        assert steps[step] == {"loss": h["loss"], "lr": h["learning_rate"], "grad_norm": h["grad_norm"]}
    assert [e["epoch"] for e in of(evs, "train_steps")] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert [e["step_in_epoch"] for e in of(evs, "train_steps")] == [2, 4, 6, 8, 2, 4, 6, 8]

    evals = {h["step"]: h for h in history if "eval_loss" in h}
    validated = of(evs, "validated")
    assert [(v["epoch"], v["step"]) for v in validated] == [(1, 8), (2, 16)]
    for v in validated:
        assert v["metrics"]["val_loss"] == evals[v["step"]]["eval_loss"]
        assert v["metrics"]["val_accuracy"] == evals[v["step"]]["eval_accuracy"]
        assert not any(k.startswith("eval_") or "runtime" in k or "per_second" in k for k in v["metrics"])
        assert v["metrics"]["train_loss"] == pytest.approx(
            sum(trainer_logs[s]["loss"] for s in range(v["step"] - 6, v["step"] + 1, 2)) / 4
        )
    saves = of(evs, "checkpoint")
    assert [(c["tag"], c["path"], c["epoch"], c["step"]) for c in saves] == [
        ("periodic", str(out / "checkpoint-8"), 1, 8),
        ("periodic", str(out / "checkpoint-16"), 2, 16),
    ]
    assert all((out / f"checkpoint-{s}").is_dir() for s in (8, 16))

    s = summary(run_dir)
    assert s is not None and (s["status"], s["reason"], s["epochs_done"], s["steps"]) == (
        "completed",
        "2 epochs done",
        2,
        16,
    )
    assert s["final_metrics"]["val_loss"] == validated[-1]["metrics"]["val_loss"]
    assert s["best_value"] == min(v["metrics"]["val_loss"] for v in validated)

    shown = run_cli("show", run_dir, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "run gpt2 started: on cpu" in shown.stdout and "2 epochs of 8 steps" in shown.stdout
    assert "epoch 2/2  train_loss" in shown.stdout and "val_accuracy" in shown.stdout
    assert f"saved periodic {out / 'checkpoint-8'}  epoch 1" in shown.stdout
    assert "finished: completed (2 epochs done) after 2 epochs, 16 steps" in shown.stdout
    listed = run_cli("ls", tmp_path / "runs", cwd=tmp_path)
    assert "gpt2" in listed.stdout and "finished" in listed.stdout and "2/2" in listed.stdout, listed.stdout
    exported = run_cli("export", run_dir, "-o", "-", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    rows = exported.stdout.splitlines()
    assert rows[0].startswith("kind,epoch,step") and len(rows) == 1 + 8 + 2, rows
    other = tmp_path / "runs" / "mine"  # a run of another loop beside it
    with tuiloop.track(other, epochs=2) as mine:
        for epoch in (1, 2):
            mine.log(epoch * 8, 4.0 - epoch)
            mine.validated(epoch, val_loss=4.0 - epoch)
    compared = run_cli("compare", run_dir, other, cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr
    assert "gpt2" in compared.stdout and "mine" in compared.stdout, compared.stdout
    assert f"gpt2  finished  2/2     {s['best_value']:.4f} @2" in compared.stdout, compared.stdout
    again = run_cli("run", "--resume", run_dir, cwd=tmp_path)
    assert again.returncode == 2 and "resume=True" in again.stderr, again.stderr

    # the script run again on the same run directory: refused, nothing mixed into the run
    logged = (run_dir / "events.jsonl").read_bytes()
    proc, _, _ = start(tmp_path)
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 1 and "RunExists" in stderr and "resume=True" in stderr, stderr[-3000:]
    assert (run_dir / "events.jsonl").read_bytes() == logged and summary(run_dir)["status"] == "completed"  # type: ignore[index]
    # resumed from the Trainer's last checkpoint for a third epoch: the same run, continued
    proc, _, _ = start(tmp_path, "--epochs", "3", "--resume-from", str(out / "checkpoint-16"))
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0 and "trained 24" in stdout, stderr[-3000:]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["started"] == started_at and len(info["resumes"]) == 1
    resumed = of(events(run_dir), "run_started")[-1]
    assert (resumed["start_step"], resumed["start_epoch"], resumed["resumed_from"]) == (
        16,
        2,
        str(out / "checkpoint-16"),
    )
    s = summary(run_dir)
    assert s is not None and (s["status"], s["epochs_done"], s["steps"]) == ("completed", 3, 24)
    assert [v["epoch"] for v in of(events(run_dir), "validated")] == [1, 2, 3]


def scheduled_lrs(base: float, steps: int) -> dict[int, float]:
    """The learning rate the Trainer logs at each step with lr_scheduler_type="linear" and no warmup."""
    import torch
    from transformers import get_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    sched = get_scheduler("linear", opt, num_warmup_steps=0, num_training_steps=steps)
    out = {}
    for step in range(1, steps + 1):
        out[step] = sched.get_last_lr()[0]  # the rate of the step, read before the scheduler steps
        opt.step()
        sched.step()
    return out


def test_the_socket_pauses_saves_scales_the_learning_rate_and_stops_after_the_epoch(tmp_path: Path) -> None:
    """What an attached monitor's keys send: p holds the Trainer in on_step_end, s makes it save
    its own checkpoint, - halves the rate for good (the linear schedule goes on from half), e
    ends it after the epoch; P (suspend) is not for this loop and is refused."""
    epochs = 40
    proc, run_dir, out = start(tmp_path, "--epochs", str(epochs), "--step-s", "0.03")
    try:
        wait_until(lambda: answers(run_dir) and last_step(run_dir) >= 4, 90, "the Trainer to train")
        assert send_command(run_dir, "pause") == {"ok": True}
        wait_until(lambda: of(events(run_dir), "state"), 20, "the pause")
        held = last_step(run_dir)
        time.sleep(0.6)
        assert last_step(run_dir) == held and of(events(run_dir), "state")[-1]["state"] == "paused"
        assert send_command(run_dir, "resume") == {"ok": True}
        wait_until(lambda: last_step(run_dir) > held, 20, "steps after the resume")
        assert send_command(run_dir, "save") == {"ok": True}
        manual = wait_until(
            lambda: [c for c in of(events(run_dir), "checkpoint") if c["tag"] == "manual"], 20, "the manual save"
        )[0]
        assert Path(manual["path"]) == out / f"checkpoint-{manual['step']}" and Path(manual["path"]).is_dir()
        assert manual["epoch"] == (manual["step"] - 1) // 8 + 1, "8 steps an epoch: the epoch the save was made in"
        assert send_command(run_dir, "suspend") == {"ok": True}
        assert send_command(run_dir, "lr_down") == {"ok": True}
        change = wait_until(lambda: of(events(run_dir), "setting_changed"), 20, "the learning rate change")[0]
        wait_until(lambda: last_step(run_dir) >= change["step"] + 12, 60, "steps at the new rate")
        assert send_command(run_dir, "stop_after_epoch") == {"ok": True}
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    evs = events(run_dir)
    warnings = [m["text"] for m in of(evs, "message") if m["level"] == "warning"]
    assert any("'suspend' does nothing in a transformers run" in w for w in warnings), warnings
    assert [s["state"] for s in of(evs, "state")] == ["paused", "running"], "the refused suspend did not stop it"

    expected = scheduled_lrs(5e-3, epochs * 8)
    lrs = {step: v["lr"] for step, v in logged_steps(evs).items()}
    at = change["step"]
    assert (change["key"], change["old"], change["new"]) == ("optimizer.lr", expected[at + 1], expected[at + 1] / 2)
    assert all(lr == pytest.approx(expected[s]) for s, lr in lrs.items() if s <= at)
    later = {s: lr for s, lr in lrs.items() if s > at}
    assert len(later) >= 5 and all(lr == pytest.approx(expected[s] / 2) for s, lr in later.items()), (
        "the scheduler goes on from the halved rate; it does not pull it back"
    )

    (e_key,) = [e for e in of(evs, "setting_changed") if e["key"] == "stop_after_epoch"]
    s = summary(run_dir)
    assert s is not None and s["status"] == "stopped" and s["steps"] % 8 == 0 and s["steps"] < epochs * 8
    assert s["reason"] == f"stopped after epoch {s['epochs_done']}, as asked" and s["epochs_done"] == e_key["epoch"]
    last = of(evs, "validated")[-1]
    assert (last["epoch"], last["step"]) == (s["epochs_done"], s["steps"]), "the epoch ended with its evaluation"
    assert (out / f"checkpoint-{s['steps']}").is_dir()


pytestmark_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


@pytestmark_tmux
def test_an_attached_monitor_offers_the_trainers_keys_and_p_s_q_steer_it(tmp_path: Path, tmux: Tmux) -> None:
    proc, run_dir, out = start(tmp_path, "--epochs", "40", "--step-s", "0.03")
    try:
        wait_until(lambda: answers(run_dir) and last_step(run_dir) >= 2, 90, "the Trainer to train")
        term = tmux.new("view", f"{TUILOOP} attach {run_dir}", width=160, height=40)
        screen = tmux.wait_for(term, r"RUNNING.*gpt2", 30)
        for key in ("p Pause", "s Save", "q Stop", "e Stop@epoch", "- LR½", "+ LR×2"):
            assert key in screen, (key, screen)
        assert "P Suspend" not in screen and "Early stopping" not in screen, screen
        tmux.send(term, "p")
        tmux.wait_for(term, r"(?s)PAUSED.*p Resume", 20)
        held = last_step(run_dir)
        time.sleep(0.5)
        assert last_step(run_dir) == held, "the Trainer waits in on_step_end"
        tmux.send(term, "p")
        tmux.wait_for(term, r"(?s)RUNNING.*p Pause", 20)
        tmux.send(term, "s")
        manual = wait_until(
            lambda: [c for c in of(events(run_dir), "checkpoint") if c["tag"] == "manual"], 30, "the save s asks for"
        )[0]
        assert (out / f"checkpoint-{manual['step']}").is_dir(), "the Trainer wrote its own checkpoint"
        tmux.wait_for(term, r"saved manual", 20)
        tmux.send(term, "q")
        tmux.wait_for(term, r"Stop the run\?", 10)
        tmux.send(term, "y")
        tmux.wait_for(term, r"\[exit 0\]", 60)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    s = summary(run_dir)
    assert s is not None and (s["status"], s["reason"]) == ("stopped", "stopped by request")
    last = of(events(run_dir), "checkpoint")[-1]
    assert (last["tag"], last["step"]) == ("last", s["steps"]) and (out / f"checkpoint-{s['steps']}").is_dir(), (
        "a stop saves the Trainer's checkpoint"
    )


def test_ctrl_c_stops_the_trainer_and_a_second_one_forces_it(tmp_path: Path) -> None:
    """The first Ctrl+C stops at the next step and the Trainer saves; a second one during that
    (slow) save ends the process at once, recorded as forced."""
    proc, run_dir, _ = start(tmp_path, "--epochs", "40", "--step-s", "0.03", "--slow-save", "30")
    try:
        wait_until(lambda: answers(run_dir) and last_step(run_dir) >= 2, 90, "the Trainer to train")
        proc.send_signal(signal.SIGINT)
        wait_until(lambda: of(events(run_dir), "checkpoint"), 30, "the save the stop asks for")
        stopping = of(events(run_dir), "state")
        assert [(s["state"], s["reason"]) for s in stopping] == [("stopping", "interrupted (SIGINT)")]
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    s = summary(run_dir)
    assert s is not None and s["status"] == "forced" and not is_locked(run_dir)
    assert of(events(run_dir), "finished")[-1]["status"] == "forced"
    assert os.path.isdir(of(events(run_dir), "checkpoint")[0]["path"])


def test_an_exception_in_training_leaves_a_failed_run_with_its_traceback(tmp_path: Path) -> None:
    """The Trainer calls no end hook when training raises: the run is closed as the process
    exits, as failed, with the error, the user's line and the traceback in its log."""
    proc, run_dir, _ = start(tmp_path, "--fail-at", "5")
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 1 and "RuntimeError: bad batch at step 5" in stderr, stderr[-3000:]
    s = summary(run_dir)
    assert s is not None and (s["status"], s["reason"], s["steps"]) == ("failed", "RuntimeError in training", 4)
    assert not is_locked(run_dir) and not (run_dir / "control.sock").exists()
    (failed,) = of(events(run_dir), "failed")
    assert failed["error"] == "RuntimeError: bad batch at step 5" and "raise RuntimeError" in failed["traceback"]
    assert any("hf_trainer.py" in frame for frame in failed["user_frames"]), failed["user_frames"]
    shown = run_cli("show", run_dir, cwd=tmp_path)
    assert "finished: failed (RuntimeError in training)" in shown.stdout, shown.stdout
