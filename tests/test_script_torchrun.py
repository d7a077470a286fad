"""``tuiloop run --nproc-per-node 2 hf_trainer.py``: the Hugging Face Trainer script with tuiloop's
callback, launched by tuiloop under torchrun (gloo, on the CPU). Rank 0's callback writes the run
directory tuiloop chose, the other rank prints to ``ranks/rank-1.log``, and ``q`` (the stop
command) stops both ranks and leaves no process behind."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import psutil
import pytest
from conftest import FIXTURES, run_cli
from runs_support import answers, events, last_step, process_gone, summary, wait_until

from tuiloop.rundir.control import send_command
from tuiloop.rundir.lock import is_locked

pytest.importorskip("transformers", reason="transformers is not installed (it is in the [test] extra)")
pytest.importorskip("accelerate", reason="accelerate is not installed (it is in the [test] extra)")
pytestmark = pytest.mark.slow

SCRIPT = FIXTURES / "hf_trainer.py"


def of_the_run(run_dir: Path) -> list[psutil.Process]:
    """The processes tuiloop started for ``run_dir``: its launcher and the ranks (in their environment)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("TUILOOP_RUN_DIR") == str(run_dir) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_q_stops_both_ranks_of_a_script_tuiloop_launched_and_leaves_no_process(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_cli(
        "run", "--detach", "--nproc-per-node", "2", SCRIPT, "-", out,
        "--epochs", "40", "--step-s", "0.03", "--ddp-timeout", "10",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_dir = Path(re.search(r"^started (\S+)", done.stdout, re.M).group(1))  # type: ignore[union-attr]
    try:
        assert list((tmp_path / "runs").iterdir()) == [run_dir]  # the one run directory: tuiloop's
        wait_until(lambda: answers(run_dir) and last_step(run_dir) >= 4, 180, "the ranks to train")
        assert send_command(run_dir, "stop") == {"ok": True}
        wait_until(lambda: not is_locked(run_dir), 120, "the launcher to end")
        seen = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
        wait_until(lambda: all(process_gone(s["pid"]) for s in seen) and not of_the_run(run_dir), 30, "no process")
    finally:
        for p in of_the_run(run_dir):  # a failed test: nothing left behind for the next one
            os.kill(p.pid, signal.SIGKILL)
    assert (summary(run_dir) or {})["status"] == "stopped"
    assert seen[0]["global_step"] == seen[1]["global_step"]  # both ranks stopped at the same step
    assert any(e["event"] == "run_started" for e in events(run_dir))
    assert (run_dir / "ranks" / "rank-1.log").is_file()
    assert "trained" in (run_dir / "output.log").read_text()  # rank 0's own output
