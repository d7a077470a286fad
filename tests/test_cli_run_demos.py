"""The bundled demos train to the scores the README states (full runs, in-process: a second or so each)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DEMOS

from tuiloop.engine.events import EarlyStopUpdate, Event, Finished, LRChanged, Validated
from tuiloop.runner.spec_run import run_spec

pytestmark = pytest.mark.slow  # whole demos trained to their scores: not the fast loop's business

pytest.importorskip("sklearn", reason="the demos' data comes with scikit-learn (the [demos] extra)")


def run_demo(name: str, tmp_path: Path) -> tuple[list[Event], Finished, dict[str, float]]:
    events: list[Event] = []
    code, _ = run_spec(DEMOS / name, [f"run.out_dir={tmp_path}", "run.device=cpu"], sinks=[events.append])
    assert code == 0
    (f,) = [e for e in events if isinstance(e, Finished)]
    best = [e.metrics for e in events if isinstance(e, Validated) and e.epoch == f.best_epoch][0]
    return events, f, best


@pytest.mark.parametrize("demo", ["digits.toml", "breast_cancer.toml"])
def test_the_classifier_demos_reach_95_percent_validation_accuracy(tmp_path: Path, demo: str) -> None:
    _, f, best = run_demo(demo, tmp_path)
    assert f.monitor in ("val_loss", "val_acc")
    assert best["val_acc"] >= 0.95, best


@pytest.mark.slow
def test_the_rare_positive_demo_early_stops_on_f1(tmp_path: Path) -> None:
    """5% positives: val_acc sits at the negatives' share while the model finds none; val_f1 decides."""
    pytest.importorskip("torchmetrics", reason="the demo's F1 and AUROC come from torchmetrics (the [metrics] extra)")
    events, f, best = run_demo("rare_cancer.toml", tmp_path)
    assert (f.status, f.monitor) == ("early_stopped", "val_f1")
    assert best["val_f1"] >= 0.8 and best["val_auroc"] >= 0.8, best


def test_diabetes_regression_beats_the_mean(tmp_path: Path) -> None:
    _, f, best = run_demo("diabetes.toml", tmp_path)
    assert f.monitor == "val_mae"
    assert best["val_mae"] <= 0.65, best  # predicting the mean gives 0.84 (standardized target)


def test_plateau_demo_reduces_the_lr_before_early_stopping(tmp_path: Path) -> None:
    events, f, _ = run_demo("plateau.toml", tmp_path)
    assert f.status == "early_stopped" and f.epochs_done < 100
    stop_epoch = [e for e in events if isinstance(e, EarlyStopUpdate) and e.triggered][0].epoch
    cuts = [e for e in events if isinstance(e, LRChanged) and e.epoch < stop_epoch]
    assert len(cuts) >= 2, [(c.epoch, c.lr) for c in cuts]
    assert all(c.lr == pytest.approx(c.previous * 0.5) for c in cuts)
    # the LR cuts helped: the best val_loss came after the first cut
    assert f.best_epoch is not None and f.best_epoch > cuts[0].epoch


def test_the_char_transformer_demo_learns(tmp_path: Path) -> None:
    """demos/chargpt.toml as written (the model's own loss, bf16-mixed, accumulation, clipping,
    warm-up and cosine), shrunk to one layer and one epoch to stay quick here."""
    events: list[Event] = []
    sets = [
        f"run.out_dir={tmp_path}",
        "run.device=cpu",
        "run.epochs=1",
        "model.n_layer=1",
        "model.n_embd=32",
        "model.n_head=2",
        "scheduler.total_steps=103",
        "optimizer.lr=1e-2",
    ]
    code, run_dir = run_spec(DEMOS / "chargpt.toml", sets, sinks=[events.append])
    assert code == 0
    (f,) = [e for e in events if isinstance(e, Finished)]
    (val,) = [e.metrics for e in events if isinstance(e, Validated)]
    assert f.step == 103 and set(val) == {"train_loss", "val_loss", "val_ppl"}
    assert val["val_loss"] < 2.8, val  # a uniform guess over 256 bytes is 5.55 nats; byte frequencies alone 3.26
    (started,) = [e for e in events if e.kind == "run_started"]
    assert (started.precision, started.accumulate_grad_batches) == ("bf16-mixed", 2)
