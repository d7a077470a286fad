"""Lightning's ``Trainer`` with ``TuiloopCallback``: the real library training a small regression
module (tests/fixtures/lightning_module.py) in a process of its own, its run directory read by
``show``, ``ls``, ``export`` and ``compare``, steered through its control socket (pause, save,
the learning rate against a step-wise ``LambdaLR``, stop after the epoch, a command it does not
obey), from an attached monitor in a real terminal, and by Ctrl+C."""

from __future__ import annotations

import json
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

pytest.importorskip("lightning", reason="lightning is not installed (it is in the [test] extra)")
pytestmark = pytest.mark.slow  # every test here starts the Trainer in a process of its own

SCRIPT = FIXTURES / "lightning_module.py"
LR, DECAY, SPE = 0.05, 0.99, 8  # the fixture's rate, its LambdaLR's factor per step, its steps per epoch


def start(tmp_path: Path, *options: str) -> tuple[subprocess.Popen, Path, Path]:
    """The fixture's script in the background, its output in files: (process, run directory, output folder)."""
    run_dir, out = tmp_path / "runs" / "reg", tmp_path / "out"
    logs = tmp_path / f"script-{len(list(tmp_path.glob('script-*.out')))}"
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, run_dir, out, *options],
        cwd=tmp_path,
        stdout=open(f"{logs}.out", "w"),  # noqa: SIM115  # the child holds it; closed as the test's tmp_path goes
        stderr=open(f"{logs}.err", "w"),  # noqa: SIM115
        env=cli_env(),
    )
    proc.logs = logs  # type: ignore[attr-defined]  # where its output is, for the assertions' messages
    return proc, run_dir, out


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[str, str]:
    """Wait for the script: its (stdout, stderr)."""
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    logs = proc.logs  # type: ignore[attr-defined]  # set by start
    return Path(f"{logs}.out").read_text(), Path(f"{logs}.err").read_text()


def of(evs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in evs if e["event"] == kind]


def logged_steps(evs: list[dict[str, Any]]) -> dict[int, float]:
    return {e["first_step"] + i: loss for e in of(evs, "train_steps") for i, loss in enumerate(e["losses"])}


def scheduled(step: int) -> float:
    """The fixture's learning rate at a step (from 1): LambdaLR, DECAY per step."""
    return LR * DECAY ** (step - 1)


def test_a_lightning_run_writes_a_full_run_directory(tmp_path: Path) -> None:
    proc, run_dir, out = start(tmp_path, "--progress-bar")
    stdout, stderr = finish(proc)
    assert proc.returncode == 0 and "trained 24" in stdout, stderr[-3000:]
    assert "8/8" in stdout, "Lightning's own progress bar is left as it is"
    assert not is_locked(run_dir) and not (run_dir / "control.sock").exists()
    info = json.loads((run_dir / "run.json").read_text())
    started_at = info["started"]
    assert info["loop"] == "lightning" and info["name"] == "reg"
    assert info["config"]["hparams"] == {"lr": LR, "fail_at": 0}, "save_hyperparameters()"
    assert info["config"]["trainer"]["max_epochs"] == 3 and info["config"]["trainer"]["precision"] == "32-true"

    evs = events(run_dir)
    (started,) = of(evs, "run_started")
    assert (started["epochs"], started["steps_per_epoch"], started["max_steps"]) == (3, SPE, 24)
    assert started["loop"] == "lightning" and started["commands"] == list(obeyed_by("lightning"))
    assert started["num_params"] == 8 * 16 + 16 + 16 + 1 and (started["monitor"], started["mode"]) == (
        "val_loss",
        "min",
    )
    assert (started["batch_size"], started["train_size"]) == (8, 64)
    seen = json.loads((out / "rank-0.json").read_text())
    assert logged_steps(evs) == {step: pytest.approx(loss) for step, loss in seen["losses"]}, "every step's loss"
    assert list(logged_steps(evs)) == list(range(1, 25))
    for e in of(evs, "train_steps"):  # each event's rate: that of its last step, before the scheduler stepped
        assert e["lr"] == pytest.approx(scheduled(e["first_step"] + len(e["losses"]) - 1))
        assert e["epoch"] == (e["first_step"] - 1) // SPE + 1 and e["samples_per_s"] > 0

    validated = of(evs, "validated")
    assert [(v["epoch"], v["step"]) for v in validated] == [(1, 8), (2, 16), (3, 24)], "not the sanity check"
    for v in validated:
        assert {"val_loss", "val/mae", "train_mse", "train_loss"} <= set(v["metrics"]), "the names as logged"
        assert v["metrics"]["train_loss"] == pytest.approx(
            sum(loss for step, loss in seen["losses"] if v["step"] - SPE < step <= v["step"]) / SPE
        )
    saves = [(c["tag"], Path(c["path"]).name, c["epoch"], c["step"]) for c in of(evs, "checkpoint")]
    best = min(validated, key=lambda v: v["metrics"]["val_loss"])
    top = ["best" if v["is_best"] else "periodic" for v in validated]  # the best so far as it saved
    assert saves == [
        (top[0], "epoch=0-step=8.ckpt", 1, 8),
        ("last", "last.ckpt", 1, 8),
        (top[1], "epoch=1-step=16.ckpt", 2, 16),
        ("last", "last.ckpt", 2, 16),
        (top[2], "epoch=2-step=24.ckpt", 3, 24),
        ("last", "last.ckpt", 3, 24),
    ], "the ModelCheckpoint's saves (two best kept), its best and its last"
    assert all(Path(c["path"]).parent == out / "ckpt" for c in of(evs, "checkpoint"))

    s = summary(run_dir)
    assert s is not None and (s["status"], s["reason"], s["epochs_done"], s["steps"]) == (
        "completed",
        "3 epochs done",
        3,
        24,
    )
    assert (
        s["best_value"] == best["metrics"]["val_loss"]
        and s["final_metrics"]["val/mae"] == validated[-1]["metrics"]["val/mae"]
    )

    shown = run_cli("show", run_dir, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "run reg started: on cpu" in shown.stdout and "3 epochs of 8 steps" in shown.stdout, shown.stdout
    assert "epoch 3/3  train_loss" in shown.stdout and "val/mae" in shown.stdout, shown.stdout
    assert "finished: completed (3 epochs done) after 3 epochs, 24 steps" in shown.stdout, shown.stdout
    listed = run_cli("ls", tmp_path / "runs", cwd=tmp_path)
    assert "reg" in listed.stdout and "finished" in listed.stdout and "3/3" in listed.stdout, listed.stdout
    exported = run_cli("export", run_dir, "-o", "-", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    rows = exported.stdout.splitlines()
    assert rows[0].startswith("kind,epoch,step") and len(rows) == 1 + 24 + 3, rows[:3]
    other = tmp_path / "runs" / "mine"
    with tuiloop.track(other, epochs=3) as mine:
        for epoch in (1, 2, 3):
            mine.log(epoch * 8, 4.0 - epoch)
            mine.validated(epoch, val_loss=4.0 - epoch)
    compared = run_cli("compare", run_dir, other, cwd=tmp_path)
    assert compared.returncode == 0 and "reg" in compared.stdout and "mine" in compared.stdout, compared.stdout

    # the script run again on the same run directory: refused, nothing mixed into the run
    logged = (run_dir / "events.jsonl").read_bytes()
    proc, _, _ = start(tmp_path)
    _, stderr = finish(proc)
    assert proc.returncode == 1 and "RunExists" in stderr and "resume=True" in stderr, stderr[-3000:]
    assert (run_dir / "events.jsonl").read_bytes() == logged
    # resumed from the ModelCheckpoint's last checkpoint for a fourth epoch: the same run, continued
    proc, _, _ = start(tmp_path, "--epochs", "4", "--resume-from", str(out / "ckpt" / "last.ckpt"))
    stdout, stderr = finish(proc)
    assert proc.returncode == 0 and "trained 32" in stdout, stderr[-3000:]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["started"] == started_at and len(info["resumes"]) == 1
    resumed = of(events(run_dir), "run_started")[-1]
    assert (resumed["start_step"], resumed["start_epoch"], resumed["resumed_from"]) == (
        24,
        3,
        str(out / "ckpt" / "last.ckpt"),
    )
    s = summary(run_dir)
    assert s is not None and (s["status"], s["epochs_done"], s["steps"]) == ("completed", 4, 32)
    assert [v["epoch"] for v in of(events(run_dir), "validated")] == [1, 2, 3, 4]


def test_the_socket_pauses_saves_scales_the_learning_rate_and_stops_after_the_epoch(tmp_path: Path) -> None:
    """p holds the Trainer in on_train_batch_end, s saves through trainer.save_checkpoint, - halves
    the rate for good (the LambdaLR goes on from half), e ends it after the epoch's validation;
    P (suspend) is not for this loop and is refused."""
    epochs = 60
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
        assert send_command(run_dir, "suspend") == {"ok": True}
        assert send_command(run_dir, "lr_down") == {"ok": True}
        change = wait_until(lambda: of(events(run_dir), "setting_changed"), 20, "the learning rate change")[0]
        wait_until(lambda: last_step(run_dir) >= change["step"] + 12, 60, "steps at the new rate")
        assert send_command(run_dir, "stop_after_epoch") == {"ok": True}
        stdout, stderr = finish(proc, 90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    step, epoch = manual["step"], manual["epoch"]
    assert Path(manual["path"]) == out / "ckpt" / f"tuiloop-epoch={epoch - 1}-step={step}.ckpt"
    assert Path(manual["path"]).is_file() and epoch == (step - 1) // SPE + 1, "saved in the epoch it was made in"
    evs = events(run_dir)
    warnings = [m["text"] for m in of(evs, "message") if m["level"] == "warning"]
    assert any("'suspend' does nothing in a lightning run" in w for w in warnings), warnings
    assert [s["state"] for s in of(evs, "state")] == ["paused", "running"], "the refused suspend did not stop it"

    at = change["step"]
    assert (change["key"], change["old"], change["new"]) == (
        "optimizer.lr",
        pytest.approx(scheduled(at + 1)),
        pytest.approx(scheduled(at + 1) / 2),
    )
    lrs = dict(json.loads((out / "rank-0.json").read_text())["lrs"])
    assert all(lr == pytest.approx(scheduled(s)) for s, lr in lrs.items() if s <= at)
    later = {s: lr for s, lr in lrs.items() if s > at}
    assert len(later) >= 12 and all(lr == pytest.approx(scheduled(s) / 2) for s, lr in later.items()), (
        "the LambdaLR goes on from the halved rate; it does not pull it back"
    )

    (e_key,) = [e for e in of(evs, "setting_changed") if e["key"] == "stop_after_epoch"]
    s = summary(run_dir)
    assert s is not None and s["status"] == "stopped" and s["steps"] % SPE == 0 and s["steps"] < epochs * SPE
    assert s["reason"] == f"stopped after epoch {s['epochs_done']}, as asked" and s["epochs_done"] == e_key["epoch"]
    last = of(evs, "validated")[-1]
    assert (last["epoch"], last["step"]) == (s["epochs_done"], s["steps"]), "the epoch ended with its validation"


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_an_attached_monitor_offers_the_trainers_keys_and_p_s_q_steer_it(tmp_path: Path, tmux: Tmux) -> None:
    proc, run_dir, out = start(tmp_path, "--epochs", "60", "--step-s", "0.03")
    try:
        wait_until(lambda: answers(run_dir) and last_step(run_dir) >= 2, 90, "the Trainer to train")
        term = tmux.new("view", f"{TUILOOP} attach {run_dir}", width=160, height=40)
        screen = tmux.wait_for(term, r"RUNNING.*reg", 30)
        for key in ("p Pause", "s Save", "q Stop", "e Stop@epoch", "- LR½", "+ LR×2"):
            assert key in screen, (key, screen)
        assert "P Suspend" not in screen and "Early stopping" not in screen, screen
        tmux.send(term, "p")
        tmux.wait_for(term, r"(?s)PAUSED.*p Resume", 20)
        held = last_step(run_dir)
        time.sleep(0.5)
        assert last_step(run_dir) == held, "the Trainer waits in on_train_batch_end"
        tmux.send(term, "p")
        tmux.wait_for(term, r"(?s)RUNNING.*p Pause", 20)
        tmux.send(term, "s")
        manual = wait_until(
            lambda: [c for c in of(events(run_dir), "checkpoint") if c["tag"] == "manual"], 30, "the save s asks for"
        )[0]
        assert Path(manual["path"]).is_file(), "trainer.save_checkpoint wrote it"
        tmux.wait_for(term, r"saved manual", 20)
        tmux.send(term, "q")
        tmux.wait_for(term, r"Stop the run\?", 10)
        tmux.send(term, "y")
        tmux.wait_for(term, r"\[exit 0\]", 60)
        stdout, stderr = finish(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    s = summary(run_dir)
    assert s is not None and (s["status"], s["reason"]) == ("stopped", "stopped by request")
    assert s["steps"] < 60 * SPE and json.loads((out / "rank-0.json").read_text())["global_step"] == s["steps"]
    last = of(events(run_dir), "checkpoint")[-1]
    assert (last["tag"], last["step"]) == ("last", s["steps"]), "the ModelCheckpoint saves as the stopped run ends"


def test_ctrl_c_stops_the_trainer_and_a_second_one_forces_it(tmp_path: Path) -> None:
    """The first Ctrl+C stops at the next step and the ModelCheckpoint saves; a second one during
    that (slow) save ends the process at once, recorded as forced."""
    proc, run_dir, _ = start(tmp_path, "--epochs", "60", "--step-s", "0.03", "--slow-save", "30")
    try:
        wait_until(lambda: answers(run_dir) and last_step(run_dir) >= 2, 90, "the Trainer to train")
        proc.send_signal(signal.SIGINT)
        stopping = wait_until(lambda: of(events(run_dir), "state"), 30, "the stop")
        assert [(s["state"], s["reason"]) for s in stopping] == [("stopping", "interrupted (SIGINT)")]
        time.sleep(1.0)  # in the slow save
        proc.send_signal(signal.SIGINT)
        finish(proc, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    s = summary(run_dir)
    assert s is not None and s["status"] == "forced" and not is_locked(run_dir)


def test_an_exception_in_training_leaves_a_failed_run_with_its_traceback(tmp_path: Path) -> None:
    """Lightning calls on_exception: the run is closed as failed, with the error, the user's line
    and the traceback in its log."""
    proc, run_dir, _ = start(tmp_path, "--fail-at", "5")
    _, stderr = finish(proc)
    assert proc.returncode == 1 and "RuntimeError: bad batch at step 5" in stderr, stderr[-3000:]
    s = summary(run_dir)
    assert s is not None and (s["status"], s["reason"], s["steps"]) == ("failed", "RuntimeError in training", 4)
    assert not is_locked(run_dir) and not (run_dir / "control.sock").exists()
    (failed,) = of(events(run_dir), "failed")
    assert failed["error"] == "RuntimeError: bad batch at step 5" and "raise RuntimeError" in failed["traceback"]
    assert any("lightning_module.py" in frame for frame in failed["user_frames"]), failed["user_frames"]
