"""``tuiloop attach`` and ``show`` in real terminals (tmux): a second view of a live run, from
another terminal while the first is still open, whose keys the run obeys."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
from conftest import run_cli, write_spec
from runs_support import TUILOOP, Tmux, events, last_step, new_run_dir, start_detached, summary, wait_live, wait_until

from tuiloop.rundir.state import run_state

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")

# 8 steps of 50 ms per epoch and far more epochs than a test waits for: it ends when told to.
LONG = dict(run={"epochs": 500}, model={"delay": 0.05})


def states(run_dir: Path) -> list[str]:
    return [e["state"] for e in events(run_dir) if e["event"] == "state"]


def steps_hold_still(run_dir: Path, seconds: float = 1.5) -> bool:
    before = last_step(run_dir)
    time.sleep(seconds)  # a span in which no step may come: the stillness is what is checked
    return last_step(run_dir) == before


def test_attach_from_a_second_terminal_obeys_the_keys(workdir: Path, tmux: Tmux, cleanup: list[Path]) -> None:
    spec = write_spec(workdir, **LONG)
    original = tmux.new("original", f"{TUILOOP} run {spec}")
    run_dir = new_run_dir(workdir / "runs", set())
    cleanup.append(run_dir)
    wait_live(run_dir)
    wait_until(lambda: any(e["event"] == "validated" for e in events(run_dir)), 60, "an epoch")

    second = tmux.new("second", f"{TUILOOP} attach {run_dir}")
    screen = tmux.wait_for(second, r"val_loss")  # the history so far is on screen
    assert "Traceback" not in screen

    # p pauses: the step count holds still while paused (the original view stays open).
    tmux.send(second, "p")
    wait_until(lambda: states(run_dir)[-1:] == ["paused"], 20, "the run to pause")
    assert steps_hold_still(run_dir)
    tmux.wait_for(second, r"(?i)paused")
    tmux.wait_for(original, r"(?i)paused")  # every view reads the same event log

    # p again resumes.
    tmux.send(second, "p")
    wait_until(lambda: states(run_dir)[-1:] == ["running"], 20, "the run to resume")
    paused_at = last_step(run_dir)
    wait_until(lambda: last_step(run_dir) > paused_at, 20, "steps after resuming")

    # s saves a checkpoint now.
    tmux.send(second, "s")
    manual = wait_until(
        lambda: [e for e in events(run_dir) if e["event"] == "checkpoint" and e["tag"] == "manual"],
        20,
        "a manual checkpoint",
    )
    assert (run_dir / manual[0]["path"]).is_file()

    # q stops the run gracefully (after asking), with last.pt saved.
    tmux.send(second, "q")
    tmux.wait_for(second, r"(?i)stop")
    tmux.send(second, "y")
    wait_until(lambda: summary(run_dir), 30, "the stopped run's summary")
    s = summary(run_dir)
    assert s["status"] == "stopped"
    last = run_dir / "checkpoints" / "last.pt"
    assert last.is_file()
    from conftest import load_ckpt

    assert load_ckpt(last)["step"] == s["steps"]
    assert run_state(run_dir).state == "stopped"
    tmux.wait_for(original, r"(?i)stopped")  # the original terminal saw it too


def test_attach_without_argument_picks_the_newest_live_run_and_d_leaves_it_going(
    workdir: Path, tmux: Tmux, cleanup: list[Path]
) -> None:
    spec = write_spec(workdir, **LONG)
    older = start_detached(spec, "run.name=older", cwd=workdir)
    cleanup.append(older)
    newer = start_detached(spec, "run.name=newer", cwd=workdir)
    cleanup.append(newer)
    wait_live(older)
    wait_live(newer)

    view = tmux.new("view", f"{TUILOOP} attach")
    tmux.wait_for(view, r"newer")
    assert "older" not in tmux.screen(view)
    tmux.send(view, "d")
    tmux.wait_for(view, r"\[exit 0\]")
    step = last_step(newer)
    wait_until(lambda: last_step(newer) > step, 20, "the run to go on after the view detached")
    assert run_state(newer).live and summary(newer) is None


def test_show_of_a_live_run_is_read_only(workdir: Path, tmux: Tmux, cleanup: list[Path]) -> None:
    """``show`` on a run that would obey commands: s, p and q send it none (q leaves the view)."""
    run_dir = start_detached(write_spec(workdir, **LONG), cwd=workdir)
    cleanup.append(run_dir)
    wait_live(run_dir)
    view = tmux.new("show", f"{TUILOOP} show {run_dir}")
    tmux.wait_for(view, r"read-only")
    tmux.send(view, "s")
    tmux.send(view, "p")
    tmux.send(view, "q")
    tmux.wait_for(view, r"\[exit 0\]")
    step = last_step(run_dir)
    wait_until(lambda: last_step(run_dir) > step + 8, 30, "the run to go on, not paused")
    assert states(run_dir) == [] and not list((run_dir / "checkpoints").glob("manual-*.pt"))
    assert run_state(run_dir).live and summary(run_dir) is None


def test_ctrl_c_in_an_attached_monitor_detaches_and_says_so(workdir: Path, tmux: Tmux, cleanup: list[Path]) -> None:
    """A second viewer's Ctrl+C out of habit must not end someone's long run."""
    run_dir = start_detached(write_spec(workdir, **LONG), cwd=workdir)
    cleanup.append(run_dir)
    wait_live(run_dir)
    view = tmux.new("view", f"{TUILOOP} attach {run_dir}")
    tmux.wait_for(view, r"RUNNING")
    tmux.send(view, "C-c")
    screen = tmux.wait_for(view, r"\[exit 0\]")
    assert "left running in the background" in screen and "Ctrl+C detaches" in screen
    step = last_step(run_dir)
    wait_until(lambda: last_step(run_dir) > step, 30, "the run to go on")
    assert states(run_dir) == [] and run_state(run_dir).live and summary(run_dir) is None


def test_show_opens_a_finished_run(workdir: Path, tmux: Tmux) -> None:
    spec = write_spec(workdir, run={"epochs": 3})
    assert run_cli("run", spec, "--headless", cwd=workdir).returncode == 0
    run_dir = next((workdir / "runs").iterdir())
    view = tmux.new("show", f"{TUILOOP} show {run_dir}")
    screen = tmux.wait_for(view, r"val_loss")
    assert re.search(r"COMPLETED", screen) and "read-only" in screen and "epoch 3/3" in screen
    tmux.send(view, "q")
    screen = tmux.wait_for(view, r"\[exit 0\]")
    assert "completed (3 epochs done) after 3 epochs, 24 steps" in screen
