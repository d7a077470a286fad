"""A failure while a run sets up inside its run directory, after the directory exists: the event
log cannot be opened (a full disk), the signal handlers cannot be installed. The run still ends
as failed, with a summary.json, its lock released, and the exit status the README gives (1).

The failures are made in the real processes (``tuiloop run``, and the training process it
starts) by a ``sitecustomize`` module put on their path: Python imports it at start-up.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiny
import torch
from conftest import cli_env, only_run, write_spec
from runs_support import ended, events, summary, wait_until
from torch import nn

import tuiloop
from tuiloop.rundir.lock import RunLock, is_locked
from tuiloop.rundir.state import run_state

BREAKERS = """
import errno, os
what = os.environ.get("TUILOOP_TEST_BREAK")
if what == "eventlog":
    import tuiloop.rundir.eventlog as eventlog

    def no_space(self, run_dir, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(getattr(run_dir, "path", run_dir) / "events.jsonl"))

    eventlog.EventLog.__init__ = no_space
elif what == "signals":
    import signal

    def refuse(*args, **kwargs):
        raise ValueError("set_wakeup_fd only works in main thread of the main interpreter")

    signal.set_wakeup_fd = refuse
"""


def run_broken(workdir: Path, what: str, *args: str) -> subprocess.CompletedProcess:
    """``tuiloop ARGS`` (and any process it starts) with ``what`` broken."""
    site = workdir / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BREAKERS)
    env = {
        **cli_env(),
        "TUILOOP_TEST_BREAK": what,
        "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    return subprocess.run(
        [sys.executable, "-m", "tuiloop", *args], cwd=workdir, capture_output=True, text=True, timeout=120, env=env
    )


def assert_failed_and_released(run_dir: Path) -> None:
    s = summary(run_dir)
    assert s is not None and s["status"] == "failed" and s["reason"] == "setup error", s
    assert not is_locked(run_dir), "the lock is released"
    assert run_state(run_dir).state == "failed"


def test_an_event_log_that_cannot_be_opened_ends_the_headless_run_as_failed(workdir: Path) -> None:
    done = run_broken(workdir, "eventlog", "run", str(write_spec(workdir)), "--headless")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "error: no space left on device writing events.jsonl  [setup]" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    run_dir = only_run(workdir / "runs")
    assert_failed_and_released(run_dir)
    assert not (run_dir / "control.sock").exists()


def test_an_event_log_that_cannot_be_opened_ends_a_background_run_as_failed(workdir: Path) -> None:
    """``tuiloop run --detach``: the training process it starts meets the failure, and the
    command, which waits until the run has imported the spec's targets, says so."""
    done = run_broken(workdir, "eventlog", "run", str(write_spec(workdir)), "--detach")
    assert done.returncode == 1, done.stderr
    assert "no space left on device writing events.jsonl" in done.stderr, done.stderr
    run_dir = only_run(workdir / "runs")
    wait_until(lambda: ended(run_dir), 60, "the training process to end")
    assert_failed_and_released(run_dir)
    assert "error: no space left on device writing events.jsonl  [setup]" in (run_dir / "output.log").read_text()


def test_signal_handlers_that_cannot_be_installed_end_the_headless_run_as_failed(workdir: Path) -> None:
    done = run_broken(workdir, "signals", "run", str(write_spec(workdir)), "--headless")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "error: ValueError: set_wakeup_fd only works in main thread" in done.stdout, done.stdout
    run_dir = only_run(workdir / "runs")
    assert_failed_and_released(run_dir)
    log = events(run_dir)
    assert [e["event"] for e in log[-2:]] == ["failed", "finished"] and "set_wakeup_fd" in log[-2]["error"]
    assert not any(e["event"] == "train_steps" for e in log), "it never trained"
    assert not (run_dir / "control.sock").exists()


def test_a_python_run_whose_event_log_cannot_be_opened_ends_with_a_summary(tmp_path: Path) -> None:
    """``tuiloop.Trainer(run_dir=...)`` on a folder whose events.jsonl is taken by a folder."""
    run_dir = tmp_path / "taken"
    (run_dir / "events.jsonl").mkdir(parents=True)
    torch.manual_seed(0)
    train_set, val_set = tiny.classes()
    model = tiny.MLP()
    seen: list[str] = []
    trainer = tuiloop.Trainer(
        model,
        tuiloop.Batches(train_set, torch.device("cpu"), batch_size=16, shuffle=True),
        tuiloop.Batches(val_set, torch.device("cpu"), batch_size=64, shuffle=False),
        nn.CrossEntropyLoss(),
        torch.optim.Adam(model.parameters(), lr=0.01),
        options=tuiloop.Options(epochs=1),
        run_dir=run_dir,
    )
    trainer.subscribe(lambda e: seen.append(e.kind))
    finished = trainer.run()
    assert (finished.status, finished.reason) == ("failed", "setup error")
    assert_failed_and_released(run_dir)
    RunLock.acquire(run_dir, wait=0).release()  # this process let go of it too
    assert not (run_dir / "control.sock").exists()
    assert seen == ["failed", "finished"], "the trainer's own sinks hear why"


@pytest.fixture(autouse=True)
def _no_stray_runs(workdir: Path):
    yield
    for run_dir in (workdir / "runs").glob("*") if (workdir / "runs").is_dir() else ():
        assert not is_locked(run_dir), f"{run_dir} is still live"
