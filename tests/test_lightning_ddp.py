"""Lightning's ``Trainer`` with ``TuiloopCallback`` in two processes (torchrun, Lightning's ``ddp``
strategy, gloo on the CPU): one launch, steered through the main process's control socket as an
attached monitor steers it. Only the main process writes a run directory; every rank pauses,
saves, changes the learning rate and stops at the same step; a pause longer than the process
group's timeout does not end the run; ``q`` ends both ranks and leaves no process behind.

torchrun, not Lightning's own launcher: Lightning's launcher starts the second process as the
first one is already waiting for it, and the short timeout of the process group (which this
test needs) would then also bound that wait, while importing Lightning takes longer."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FIXTURES
from framework_support import check_stopped_together, launch, of, steer_both_ranks

pytest.importorskip("lightning", reason="lightning is not installed (it is in the [test] extra)")
pytestmark = pytest.mark.slow  # the two processes train for a while

SCRIPT = FIXTURES / "lightning_module.py"
TIMEOUT_S = 4  # the process group's; the pause is held longer than this
STEPS_PER_EPOCH = 4  # 64 samples, 8 per process and step, 2 processes
LR, DECAY = 0.05, 0.99


def test_two_processes_obey_each_key_at_the_same_step_and_q_ends_both(tmp_path: Path) -> None:
    options = ["--devices", "2", "--epochs", "60", "--step-s", "0.03", "--timeout", str(TIMEOUT_S)]
    proc = launch(tmp_path, SCRIPT, *options)
    run_dir, change = steer_both_ranks(proc, tmp_path, TIMEOUT_S)
    evs, seen, s = check_stopped_together(tmp_path, run_dir, TIMEOUT_S, STEPS_PER_EPOCH)
    assert of(evs, "run_started")[0]["loop"] == "lightning"

    # the same decisions on both ranks, at the same steps
    assert seen[0]["global_step"] == seen[1]["global_step"] == s["steps"] < 60 * STEPS_PER_EPOCH
    at = change["step"]
    for step, lr in seen[0]["lrs"]:  # halved after the change, and the LambdaLR did not pull it back
        assert lr == pytest.approx(LR * DECAY ** (step - 1) / (2 if step > at else 1)), (step, lr, at)
    manual = [c for c in of(evs, "checkpoint") if c["tag"] == "manual"][0]
    assert Path(manual["path"]).is_file()
    last = of(evs, "checkpoint")[-1]
    assert (last["tag"], last["step"]) == ("last", s["steps"])
