"""``tuiloop run --detach``: the command returns at once, the run goes on in the background."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import run_cli, write_spec
from runs_support import start_detached, summary, wait_until

from tuiloop.rundir.state import run_state


def test_detach_returns_at_once_and_the_run_finishes_in_the_background(workdir: Path, cleanup: list[Path]) -> None:
    spec = write_spec(workdir, run={"epochs": 4}, model={"delay": 0.05})
    t0 = time.monotonic()
    done = run_cli("run", "--detach", spec, cwd=workdir)
    took = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    run_dir = next((workdir / "runs").iterdir())
    cleanup.append(run_dir)
    # It says where the run is and how to watch it, and it returned before the run ended.
    assert done.stdout.splitlines()[0].startswith(f"started {run_dir} (pid ")
    assert f"tuiloop attach {run_dir}" in done.stdout
    assert summary(run_dir) is None, f"--detach waited for the run ({took:.1f}s)"

    # Listed as running straight away, even before the training process has started up.
    listed = run_cli("ls", workdir / "runs", cwd=workdir)
    assert listed.stdout.splitlines()[1].split()[1] in ("running", "finished"), listed.stdout
    assert run_state(run_dir).state in ("running", "finished")

    wait_until(lambda: summary(run_dir), 90, "the background run's summary")
    s = summary(run_dir)
    assert (s["status"], s["epochs_done"]) == ("completed", 4)
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    log = (run_dir / "output.log").read_text()
    assert "epoch 4/4" in log and "finished: completed" in log and "\r" not in log
    listed = run_cli("ls", workdir / "runs", cwd=workdir)
    assert listed.stdout.splitlines()[1].split()[1:3] == ["finished", "4/4"], listed.stdout


def test_a_detached_run_that_fails_is_listed_as_failed(workdir: Path, cleanup: list[Path]) -> None:
    """A run whose loss turns NaN in the background: its summary and ``ls`` say failed."""
    spec = write_spec(workdir, data={"target": "tiny.py:with_nan", "shuffle": False}, model={"out_features": 1}, loss={"target": "MSELoss"})
    run_dir = start_detached(spec, cwd=workdir)
    cleanup.append(run_dir)
    wait_until(lambda: summary(run_dir), 90, "the summary")
    assert summary(run_dir)["status"] == "failed"
    listed = run_cli("ls", workdir / "runs", cwd=workdir)
    assert listed.stdout.splitlines()[1].split()[1] == "failed"
