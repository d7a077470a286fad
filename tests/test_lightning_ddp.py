"""Lightning's ``Trainer`` with ``TuiloopCallback`` in two processes (torchrun, Lightning's ``ddp``
strategy, gloo on the CPU): one launch, steered through the main process's control socket as an
attached monitor steers it. Only the main process writes a run directory; every rank pauses,
saves, changes the learning rate and stops at the same step; a pause longer than the process
group's timeout does not end the run; ``q`` ends both ranks and leaves no process behind.

torchrun, not Lightning's own launcher: Lightning's launcher starts the second process as the
first one is already waiting for it, and the short timeout of the process group (which this
test needs) would then also bound that wait, while importing Lightning takes longer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, cli_env, run_cli
from runs_support import answers, events, last_step, process_gone, summary, wait_until

from tuiloop.rundir.control import send_command
from tuiloop.rundir.lock import is_locked

pytest.importorskip("lightning", reason="lightning is not installed (it is in the [test] extra)")
pytestmark = pytest.mark.slow  # the two processes train for a while

SCRIPT = FIXTURES / "lightning_module.py"
TIMEOUT_S = 4  # the process group's; the pause is held longer than this
STEPS_PER_EPOCH = 4  # 64 samples, 8 per process and step, 2 processes
LR, DECAY = 0.05, 0.99


def of(evs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in evs if e["event"] == kind]


def only_run(runs: Path) -> Path | None:
    found = list(runs.iterdir()) if runs.is_dir() else []
    assert len(found) <= 1, f"one run directory for the two processes, not {found}"
    return found[0] if found else None


def test_two_processes_obey_each_key_at_the_same_step_and_q_ends_both(tmp_path: Path) -> None:
    out = tmp_path / "out"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    options = ["--devices", "2", "--epochs", "60", "--step-s", "0.03", "--timeout", str(TIMEOUT_S)]
    proc = subprocess.Popen(
        [*torchrun, SCRIPT, "-", out, *options],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**cli_env(), "GLOO_SOCKET_IFNAME": "lo"},
        start_new_session=True,
    )
    try:
        run_dir = wait_until(lambda: only_run(tmp_path / "runs"), 120, "the main process's run directory")
        wait_until(lambda: answers(run_dir) and last_step(run_dir) >= 4, 120, "the ranks to train")
        assert send_command(run_dir, "pause") == {"ok": True}
        wait_until(lambda: of(events(run_dir), "state"), 20, "the pause")
        held = last_step(run_dir)
        time.sleep(TIMEOUT_S + 2)  # the ranks stay in step, and no collective waits out the timeout
        assert last_step(run_dir) == held and proc.poll() is None
        assert send_command(run_dir, "resume") == {"ok": True}
        wait_until(lambda: last_step(run_dir) > held, 30, "steps after the resume")
        assert send_command(run_dir, "save") == {"ok": True}
        wait_until(lambda: [c for c in of(events(run_dir), "checkpoint") if c["tag"] == "manual"], 30, "the save")
        assert send_command(run_dir, "lr_down") == {"ok": True}
        change = wait_until(lambda: of(events(run_dir), "setting_changed"), 30, "the learning rate change")[0]
        wait_until(lambda: last_step(run_dir) >= change["step"] + 4, 30, "steps at the new rate")
        assert send_command(run_dir, "stop") == {"ok": True}
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a failed test: torchrun and its workers, all in their own session
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, output[-4000:]

    seen = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(process_gone(s["pid"]) for s in seen), "no rank is left behind"
    assert not is_locked(run_dir) and not (run_dir / "control.sock").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "runs"], "the other rank wrote nothing"

    evs = events(run_dir)
    (started,) = of(evs, "run_started")
    assert (started["world_size"], started["backend"], started["steps_per_epoch"]) == (2, "gloo", STEPS_PER_EPOCH)
    assert started["loop"] == "lightning" and len(started["nodes"]) == 1
    s = summary(run_dir)
    assert s is not None and (s["status"], s["reason"]) == ("stopped", "stopped by request")

    # the same decisions on both ranks, at the same steps
    assert seen[0]["global_step"] == seen[1]["global_step"] == s["steps"] < 60 * STEPS_PER_EPOCH
    assert seen[0]["lrs"] == seen[1]["lrs"], "the learning rate changed at the same step on both ranks"
    at = change["step"]
    for step, lr in seen[0]["lrs"]:  # halved after the change, and the LambdaLR did not pull it back
        assert lr == pytest.approx(LR * DECAY ** (step - 1) / (2 if step > at else 1)), (step, lr, at)
    manual = [c for c in of(evs, "checkpoint") if c["tag"] == "manual"][0]
    assert manual["step"] in seen[0]["saves"] and seen[0]["saves"] == seen[1]["saves"]
    assert Path(manual["path"]).is_file()
    last = of(evs, "checkpoint")[-1]
    assert (last["tag"], last["step"]) == ("last", s["steps"])
    paused, resumed = of(evs, "state")[:2]
    assert (paused["state"], resumed["state"]) == ("paused", "running")
    for rank in seen:  # each rank held still for the whole pause, longer than the process group's timeout
        gaps = [b - a for a, b in zip(rank["ended"], rank["ended"][1:], strict=False)]
        assert max(gaps) > TIMEOUT_S + 1, gaps

    shown = run_cli("show", run_dir, cwd=tmp_path)
    assert shown.returncode == 0 and "finished: stopped (stopped by request)" in shown.stdout, shown.stdout[-2000:]
    listed = run_cli("ls", tmp_path / "runs", cwd=tmp_path)
    assert run_dir.name in listed.stdout and "stopped" in listed.stdout, listed.stdout
