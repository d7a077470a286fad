"""The Hugging Face ``Trainer`` with ``TuiloopCallback`` in two processes under torchrun (gloo, on
the CPU): one launch, steered through the main process's control socket as an attached monitor
steers it. Only the main process writes a run directory; every rank pauses, saves, changes the
learning rate and stops at the same step; a pause longer than the process group's timeout does
not end the run; ``q`` ends both ranks and leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from conftest import FIXTURES
from framework_support import check_stopped_together, ended, kill, launch, of, ranks_seen, steer_both_ranks, training
from runs_support import summary

from tuiloop.rundir.lock import is_locked

pytest.importorskip("transformers", reason="transformers is not installed (it is in the [test] extra)")
pytest.importorskip("accelerate", reason="accelerate is not installed (it is in the [test] extra)")
pytestmark = pytest.mark.slow  # every test here starts the Trainer in a process of its own

SCRIPT = FIXTURES / "hf_trainer.py"
TIMEOUT_S = 4  # the process group's (TrainingArguments.ddp_timeout); the pause is held longer than this
STEPS_PER_EPOCH = 4  # 64 sequences, 8 per process and step, 2 processes


def test_two_processes_obey_each_key_at_the_same_step_and_q_ends_both(tmp_path: Path) -> None:
    proc = launch(tmp_path, SCRIPT, "--epochs", "40", "--step-s", "0.03", "--ddp-timeout", str(TIMEOUT_S))
    run_dir, change = steer_both_ranks(proc, tmp_path, TIMEOUT_S)
    evs, seen, s = check_stopped_together(tmp_path, run_dir, TIMEOUT_S, STEPS_PER_EPOCH)

    # the same decisions on both ranks, at the same steps
    assert seen[0]["global_step"] == seen[1]["global_step"] == s["steps"]
    at, planned = change["step"], 40 * STEPS_PER_EPOCH
    linear = lambda step: 5e-3 * (1 - step / planned)  # noqa: E731  # the rate after the scheduler's step
    for step, lr in seen[0]["lrs"]:  # halved from the change on, and the schedule did not pull it back
        assert lr == pytest.approx(linear(step) / (2 if step >= at else 1)), (step, lr, at)
    manual = [c for c in of(evs, "checkpoint") if c["tag"] == "manual"][0]
    assert (tmp_path / "out" / f"checkpoint-{manual['step']}").is_dir()


def test_ctrl_c_on_one_rank_stops_both_at_the_same_step(tmp_path: Path) -> None:
    """A SIGINT that reaches only the second process: the ranks agree on the stop, and both end
    at the same step, the run recorded as stopped."""
    proc = launch(tmp_path, SCRIPT, "--epochs", "40", "--step-s", "0.03")
    try:
        run_dir = training(tmp_path)
        os.kill(json.loads((tmp_path / "out" / "rank-1.json").read_text())["pid"], signal.SIGINT)
    except BaseException:
        kill(proc)
        raise
    ended(proc)
    seen = ranks_seen(tmp_path)
    s = summary(run_dir)
    assert s is not None and s["status"] == "stopped" and s["steps"] < 40 * STEPS_PER_EPOCH
    assert seen[0]["global_step"] == seen[1]["global_step"] == s["steps"]
    assert not is_locked(run_dir)
