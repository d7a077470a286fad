"""``tuiloop run --resume RUN_DIR --set ...`` with the settings that may change besides the
optimizer's: the scheduler's, early-stopping patience, periodic checkpoints and the log
interval. One resumed run with all of them: each is recorded as a change and takes effect from
the resumed step on."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from conftest import only_run, run_cli, write_spec
from runs_support import events

from tuiloop.rundir.layout import read_json

# Nothing improves val_acc by 0.5: the early-stopping counter only counts up, one per epoch.
FIRST = dict(
    run={"epochs": 2, "log_interval": 0.001},  # below a step's time: a train_steps line per step
    model={"delay": 0.005},
    scheduler={"target": "StepLR", "step_size": 1, "gamma": 0.5},
    early_stopping={"monitor": "val_acc", "mode": "max", "patience": 10, "min_delta": 0.5},
    checkpoint={"every_n_epochs": 1},
)
EDITS = {
    "run.epochs": (2, 20),
    "run.log_interval": (0.001, 60),  # longer than an epoch: one line per epoch, at its end
    "scheduler.step_size": (1, 2),
    "scheduler.gamma": (0.5, 0.1),
    "early_stopping.patience": (10, 4),
    "checkpoint.every_n_epochs": (1, 3),
}


def test_resume_applies_and_records_scheduler_patience_checkpoint_and_log_interval_edits(workdir: Path) -> None:
    done = run_cli("run", write_spec(workdir, **FIRST), "--headless", cwd=workdir)
    assert done.returncode == 0, done.stderr
    run_dir = only_run(workdir / "runs")
    sets = [a for key, (_, new) in EDITS.items() for a in ("--set", f"{key}={new}")]
    resumed = run_cli("run", "--resume", run_dir, "--headless", *sets, cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    log = events(run_dir)

    # each edit is an event at the resumed step, and a line of the headless output
    changed = {e["key"]: (e["old"], e["new"], e["step"]) for e in log if e["event"] == "setting_changed"}
    assert changed == {key: (old, new, 16) for key, (old, new) in EDITS.items()}
    for key, (old, new) in EDITS.items():
        assert re.search(rf"{re.escape(key)}: {old} -> {new} \(resume with new settings, step 16,", resumed.stdout), (
            key,
            resumed.stdout,
        )

    # early stopping: the counter was 1 after epoch 2; patience 4 is used up at epoch 5 (of 20)
    summary = read_json(run_dir / "summary.json")
    assert summary is not None and summary["status"] == "early_stopped" and summary["epochs_done"] == 5, summary
    started = [e for e in log if e["event"] == "run_started"]
    assert [e["patience"] for e in started] == [10, 4]

    # StepLR: 0.01, 0.005 (step_size 1, gamma 0.5); then 0.0025 for epoch 3 (already scheduled),
    # held for epoch 4 (step_size 2) and times 0.1 for epoch 5 (gamma 0.1)
    lrs = {e["epoch"]: e["lr"] for e in log if e["event"] == "train_steps"}
    assert lrs == pytest.approx({1: 0.01, 2: 0.005, 3: 0.0025, 4: 0.0025, 5: 0.00025})

    # periodic checkpoints: every epoch before the resume, every third after it
    periodic = sorted(p.name for p in (run_dir / "checkpoints").glob("epoch-*.pt"))
    assert periodic == ["epoch-0001.pt", "epoch-0002.pt", "epoch-0003.pt"]

    # the log interval: a line per step before the resume (each 5 ms step outlasts 1 ms), one per epoch after
    lines_per_epoch = Counter(e["epoch"] for e in log if e["event"] == "train_steps")
    assert lines_per_epoch == {1: 8, 2: 8, 3: 1, 4: 1, 5: 1}
