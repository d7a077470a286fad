"""Bad [metrics] entries and monitors: one paragraph naming the key and the fix, exit status 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_spec
from test_spec_errors import has_all, run_error

F1 = "torchmetrics.classification:BinaryF1Score"
BINARY = dict(
    model={"out_features": 1},
    data={"target": "tiny.py:rare"},
    loss={"target": "BCEWithLogitsLoss"},
)


def test_a_misspelt_target_names_the_metric_and_the_right_name(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = run_error(capsys, write_spec(workdir, metrics={"f1": "torchmetrics.classification:BinaryF1Scor"}))
    has_all(err, "spec.toml, [metrics] f1:", "has no attribute 'BinaryF1Scor'", "Did you mean 'BinaryF1Score'?")
    err = run_error(capsys, write_spec(workdir, metrics={"f1": "torchmetrix.classification:BinaryF1Score"}))
    has_all(err, "[metrics] f1:", "no module named 'torchmetrix'")
    err = run_error(capsys, write_spec(workdir, metrics={"f1": "BinaryF1Score"}))
    has_all(err, "[metrics] f1:", "does not say where", '"torchmetrics.classification:BinaryF1Score"')
    err = run_error(capsys, write_spec(workdir, metrics={"b": "tiny.py:brierr"}))
    has_all(err, "[metrics] b:", "has no attribute 'brierr'", "Did you mean 'brier'?")


def test_a_misspelt_or_missing_argument(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    top = {"target": "torchmetrics.classification:MulticlassAccuracy", "num_clases": 3, "top_k": 2}
    err = run_error(capsys, write_spec(workdir, metrics={"top2": top}))
    has_all(err, "spec.toml, [metrics] top2 num_clases:", "not a parameter of", "Did you mean 'num_classes'?")
    err = run_error(capsys, write_spec(workdir, metrics={"top2": {"target": top["target"], "top_k": 2}}))
    # torchmetrics gives num_classes a default of None, and its constructor says what is missing
    has_all(err, "[metrics] top2: building", "raised ValueError: Argument `num_classes`", "Fix the arguments of top2")
    err = run_error(capsys, write_spec(workdir, metrics={"b": {"target": "tiny.py:brier", "scal": 2.0}}))
    has_all(err, "[metrics] b scal:", "Did you mean 'scale'?")
    err = run_error(capsys, write_spec(workdir, metrics={"b": {"target": "tiny.py:brier", "targets": 2.0}}))
    has_all(err, "[metrics] b targets:", "tuiloop passes targets")


def test_entries_that_are_not_metrics(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_error(capsys, write_spec(workdir, metrics={"f1": 3}))
    has_all(err, "[metrics] f1:", "expected a target string or an inline table, got 3", 'f1 = "module:attr"')
    err = run_error(capsys, write_spec(workdir, metrics={"f1": {"average": "macro"}}))
    has_all(err, "[metrics] f1:", "no target string", 'f1 = { target = "module:attr", ... }')
    err = run_error(capsys, write_spec(workdir, metrics={"acc": F1}))
    has_all(err, "[metrics] acc:", "val_acc is one of tuiloop's own metrics", "my_acc")
    err = run_error(capsys, write_spec(workdir, metrics={"top-5": F1}))
    has_all(err, "[metrics] top-5:", "not a usable metric name", "letters, digits and _")
    err = run_error(capsys, write_spec(workdir, metrics={"m": "tiny.py:one_arg"}))
    has_all(err, "[metrics] m:", "called as fn(outputs, targets)")


def test_a_monitor_never_suggests_a_metric_of_another_kind(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """val_f1 is not val_mae, val_auroc is not val_acc: a name that is not configured gets the line that adds it."""
    err = run_error(capsys, write_spec(workdir, **BINARY, early_stopping={"monitor": "val_f1"}))
    has_all(
        err,
        "spec.toml, [early_stopping] monitor: 'val_f1' is not a metric this run reports",
        f'add it under [metrics] as f1 = "{F1}"',
        "The run can report train_loss, val_loss, val_acc, val_mae, val_ppl.",
    )
    assert "Did you mean" not in err
    err = run_error(capsys, write_spec(workdir, **BINARY, checkpoint={"monitor": "val_auroc"}))
    has_all(err, "[checkpoint] monitor", 'auroc = "torchmetrics.classification:BinaryAUROC"')
    assert "Did you mean" not in err
    # a typo of a configured metric is one
    err = run_error(capsys, write_spec(workdir, **BINARY, metrics={"f1": F1}, early_stopping={"monitor": "val_f"}))
    has_all(err, "'val_f' is not a metric this run reports", "Did you mean 'val_f1'?", "val_ppl, val_f1.")
    err = run_error(capsys, write_spec(workdir, scheduler={"target": "ReduceLROnPlateau", "monitor": "val_los"}))
    has_all(err, "[scheduler] monitor", "Did you mean 'val_loss'?")
    err = run_error(capsys, write_spec(workdir, early_stopping={"monitor": "val_brier"}))
    has_all(err, "'val_brier' is not a metric", "add the metric under [metrics] and monitor val_<name>")
