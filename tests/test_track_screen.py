"""A tracked loop as its user sees it in ``tuiloop attach``, in a real terminal (tmux): the
model's parameter count, no early-stopping panel (the loop has no spec), ``p`` reading Resume
while paused, a manual save logged with the epoch the header shows, and an ETA that counts the
steps the loop advanced when it logs only every 5th one."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import cli_env
from runs_support import TUILOOP, Tmux, answers, events, last_step, summary, wait_until

from tuiloop.rundir.eventlog import read_events
from tuiloop.tui.model import MonitorModel

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")

STEP_S = 0.01
LOOP = f"""
import sys, time, torch, tuiloop
from torch import nn

model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))  # 227 parameters
run = tuiloop.track(sys.argv[1], epochs=100, steps_per_epoch=50, model=model)
step = 0
with run:
    for epoch in range(1, 101):
        for i in range(50):
            time.sleep({STEP_S})
            step += 1
            if step % 5 == 0:  # logs every 5th step, as the docs say is fine
                run.log(step, train_loss=1.0 / step, samples=8)
            run.wait_if_paused()
            if run.should_stop():
                break
            if run.save_requested():
                path = f"{{sys.argv[1]}}/checkpoints/manual-{{step}}.pt"
                torch.save(model.state_dict(), path)
                run.checkpoint(path)
        if run.should_stop():
            break
        run.validated(epoch, val_loss=1.0 / epoch)
"""


def test_a_tracked_loop_on_the_attached_screen(tmp_path: Path, tmux: Tmux) -> None:
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent(LOOP))
    run_dir = tmp_path / "runs" / "mine"
    proc = subprocess.Popen([sys.executable, script, run_dir], cwd=tmp_path, env=cli_env(), stderr=subprocess.PIPE)
    try:
        wait_until(lambda: answers(run_dir) and last_step(run_dir) >= 120, 60, "the loop to run a while")
        # the ETA's pace: the steps advanced per second, not the values logged (one in 5)
        model = MonitorModel()
        model.apply_all(read_events(run_dir)[0])
        per_step = model.seconds_per_step()
        first, last = model.first_event_time, model.last_event_time
        assert per_step is not None and first is not None and last is not None
        assert 0.5 < per_step / ((last - first) / model.step) < 2, (per_step, model.step, last - first)

        term = tmux.new("view", f"{TUILOOP} attach {run_dir}", width=120, height=40)
        screen = tmux.wait_for(term, r"RUNNING.*227 params", 30)
        assert "Early stopping" not in screen and "early_stopping" not in screen, screen
        assert "p Pause" in screen
        tmux.send(term, "p")
        tmux.wait_for(term, r"(?s)PAUSED.*p Resume", 20)
        tmux.send(term, "p")
        tmux.wait_for(term, r"(?s)RUNNING.*p Pause", 20)
        tmux.send(term, "s")
        screen = tmux.wait_for(term, r"saved manual checkpoints/manual-\d+\.pt  epoch \d+", 20)
        (saved,) = [e for e in events(run_dir) if e["event"] == "checkpoint"]
        in_progress = (saved["step"] - 1) // 50 + 1  # 50 steps an epoch, from 1
        assert saved["epoch"] == in_progress and f"epoch {in_progress}" in screen, "the epoch the save was made in"
        tmux.send(term, "q")
        tmux.wait_for(term, r"Stop the run\?", 10)
        tmux.send(term, "y")
        tmux.wait_for(term, r"\[exit 0\]", 30)
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    s = summary(run_dir)
    assert s is not None and s["status"] == "stopped"
