"""Metrics the user chooses ([metrics]), as a user meets them: the real ``tuiloop run`` on a spec.

A rare-positive problem (8 of 101 validation samples positive) where F1 and AUROC say what
accuracy does not, checked against scikit-learn on the saved checkpoint's predictions; a function
metric and an update/compute/reset class of one's own; a model that computes its own loss, with
val_ppl; two gloo ranks on an odd-sized validation split, equal to one process; what show,
compare and export then show. One launch per run, shared by the assertions on it.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
import tiny
import torch
from conftest import load_ckpt, only_run, run_cli, write_spec
from runs_support import events, summary
from sklearn.metrics import f1_score, roc_auc_score

pytestmark = pytest.mark.slow

F1 = "torchmetrics.classification:BinaryF1Score"
AUROC = "torchmetrics.classification:BinaryAUROC"
RARE = dict(
    run={"epochs": 6},
    model={"out_features": 1},
    data={"target": "tiny.py:rare", "batch_size": 16},
    loss={"target": "BCEWithLogitsLoss"},
    metrics={
        "f1": F1,
        "auroc": {"target": AUROC},
        "brier": {"target": "tiny.py:brier", "scale": 2.0},
        "hits": "tiny.py:Hits",
    },
    early_stopping={"monitor": "val_f1", "patience": 10},
)


def validations(run_dir: Path) -> list[dict[str, Any]]:
    return [e for e in events(run_dir) if e["event"] == "validated"]


def expected(ckpt: Path) -> dict[str, float]:
    """What the metrics are for a checkpoint's weights on the whole validation split, in this process."""
    model = tiny.MLP(4, 1, 16)
    model.load_state_dict(load_ckpt(ckpt)["model_state_dict"])
    x, y = tiny.rare()[1].tensors
    with torch.no_grad():
        out = model(x).squeeze(1)
    y = y.squeeze(1)
    return {
        "val_f1": f1_score(y.numpy(), (out > 0).numpy()),
        "val_auroc": roc_auc_score(y.numpy(), out.numpy()),
        "val_brier": 2.0 * ((out.sigmoid() - y) ** 2).mean().item(),
        "val_hits": ((out > 0).float() == y).float().mean().item(),
        "val_acc": ((out > 0).float() == y).float().mean().item(),
    }


def assert_like(got: dict[str, float], want: dict[str, float]) -> None:
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name


@pytest.fixture(scope="module")
def rare_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One headless run on the rare-positive problem, early stopping and best.pt on val_f1."""
    workdir = tmp_path_factory.mktemp("rare")
    (workdir / "tiny.py").write_text(Path(tiny.__file__).read_text())
    done = run_cli("run", write_spec(workdir, **RARE), "--headless", cwd=workdir)
    assert done.returncode == 0, done.stderr
    return only_run(workdir / "runs"), done


def test_f1_and_auroc_on_rare_positives_equal_scikit_learn_on_the_best_checkpoint(rare_run: tuple[Path, Any]) -> None:
    run_dir, done = rare_run
    vals = validations(run_dir)
    assert [set(v["metrics"]) for v in vals] == [
        {"train_loss", "val_loss", "val_acc", "val_f1", "val_auroc", "val_brier", "val_hits"}
    ] * 6  # no val_ppl: BCE is not a cross-entropy over classes
    best = load_ckpt(run_dir / "checkpoints" / "best.pt")
    at_best = next(v for v in vals if v["epoch"] == best["epoch"])
    assert_like(at_best["metrics"], expected(run_dir / "checkpoints" / "best.pt"))
    assert_like(vals[-1]["metrics"], expected(run_dir / "checkpoints" / "last.pt"))
    # accuracy says nothing here: predicting no positive at all scores the share of negatives
    first = vals[0]["metrics"]
    negatives = 1 - tiny.rare()[1].tensors[1].mean().item()
    assert first["val_f1"] == 0.0 and first["val_acc"] == pytest.approx(negatives)
    assert any(v["metrics"]["val_f1"] > 0.3 for v in vals)
    # ... and the run says so, once
    warned = [line for line in done.stdout.splitlines() if "is exactly the share of the most common class" in line]
    assert len(warned) == 1 and "predicts that one class for every sample" in warned[0], done.stdout
    assert "Watch val_f1 and val_auroc." in warned[0]


def test_the_best_checkpoint_and_early_stopping_follow_val_f1_upwards(rare_run: tuple[Path, Any]) -> None:
    run_dir, done = rare_run
    (started,) = [e for e in events(run_dir) if e["event"] == "run_started"]
    assert (started["monitor"], started["mode"]) == ("val_f1", "max")  # BinaryF1Score.higher_is_better
    assert started["modes"]["val_f1"] == started["modes"]["val_auroc"] == "max"
    assert started["modes"]["val_brier"] == "min" and started["modes"]["val_hits"] == "max"  # Hits says so
    f1 = [v["metrics"]["val_f1"] for v in validations(run_dir)]
    best_epoch = 1 + f1.index(max(f1))
    assert load_ckpt(run_dir / "checkpoints" / "best.pt")["epoch"] == best_epoch
    s = summary(run_dir)
    assert s is not None and (s["monitor"], s["best_epoch"], s["best_value"]) == ("val_f1", best_epoch, max(f1))
    assert set(s["final_metrics"]) >= {"val_f1", "val_auroc", "val_brier", "val_hits"}
    es = [e for e in events(run_dir) if e["event"] == "early_stop"]
    assert es and all(e["monitor"] == "val_f1" for e in es)
    assert "val_f1 0." in done.stdout and f"best val_f1 {max(f1):.4f} at epoch {best_epoch}" in done.stdout


def test_show_ls_compare_and_export_show_the_chosen_metrics(rare_run: tuple[Path, Any]) -> None:
    run_dir, _ = rare_run
    out = run_dir.parent.parent
    shown = run_cli("show", run_dir, cwd=out)
    assert shown.returncode == 0 and "val_auroc" in shown.stdout and "val_brier" in shown.stdout
    ls = run_cli("ls", cwd=out)
    assert "BEST val_f1" in ls.stdout, ls.stdout
    exported = run_cli("export", run_dir, "-o", "-", cwd=out)
    rows = list(csv.DictReader(exported.stdout.splitlines()))
    assert {"val_f1", "val_auroc", "val_brier", "val_hits"} <= set(rows[0])
    f1 = [float(r["val_f1"]) for r in rows if r["val_f1"]]
    assert f1 == [v["metrics"]["val_f1"] for v in validations(run_dir)]
    second = run_cli(
        "run", write_spec(out, "again.toml", **{**RARE, "run": {"epochs": 2, "name": "again"}}), "--headless", cwd=out
    )
    assert second.returncode == 0, second.stderr
    compared = run_cli("compare", run_dir, only_run_named(out / "runs", "again"), "--metric", "val_auroc", cwd=out)
    assert compared.returncode == 0 and "BEST val_auroc" in compared.stdout, compared.stdout + compared.stderr


def only_run_named(out_dir: Path, prefix: str) -> Path:
    (found,) = [p for p in out_dir.iterdir() if p.name.startswith(prefix + "-")]
    return found


def test_a_model_computing_its_own_loss_reports_val_ppl_and_metrics_on_its_logits(workdir: Path) -> None:
    """nanoGPT's (logits, loss): metrics get the logits and the batch's labels; val_ppl = exp(val_loss)."""
    spec = write_spec(
        workdir,
        model={"target": "tiny.py:OwnLoss", "style": "tuple"},
        loss={"target": "model"},
        metrics={
            "hits": "tiny.py:Hits",
            "top2": {"target": "torchmetrics.classification:MulticlassAccuracy", "num_classes": 3, "top_k": 2},
        },
        checkpoint={"monitor": "val_ppl"},
    )
    done = run_cli("run", spec, "--headless", cwd=workdir)
    assert done.returncode == 0, done.stderr
    run_dir = only_run(workdir / "runs")
    vals = validations(run_dir)
    for v in vals:
        m = v["metrics"]
        assert set(m) == {"train_loss", "val_loss", "val_ppl", "val_hits", "val_top2"}
        assert m["val_ppl"] == pytest.approx(math.exp(m["val_loss"]), rel=1e-12)
    model = tiny.OwnLoss("tuple")
    model.load_state_dict(load_ckpt(run_dir / "checkpoints" / "last.pt")["model_state_dict"])
    x, y = tiny.classes()[1].tensors
    with torch.no_grad():
        logits, _ = model(x, y)
    assert vals[-1]["metrics"]["val_hits"] == (logits.argmax(1) == y).float().mean().item()
    (started,) = [e for e in events(run_dir) if e["event"] == "run_started"]
    assert (started["monitor"], started["mode"]) == ("val_ppl", "min")


def test_a_model_that_takes_no_targets_with_loss_model_is_told_what_to_change(workdir: Path) -> None:
    done = run_cli("run", write_spec(workdir, loss={"target": "model"}), "--headless", cwd=workdir)
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert 'with [loss] target = "model" the whole batch goes to forward, as model(x, y)' in text, text
    assert 'set [loss] target = "CrossEntropyLoss"' in text and "Traceback" not in text


def test_a_metric_that_cannot_take_the_problem_fails_at_the_first_step(workdir: Path) -> None:
    """A multi-class problem handed to a binary metric: stopped at the first batch, saying what it was given."""
    done = run_cli("run", write_spec(workdir, metrics={"f1": F1}), "--headless", cwd=workdir)
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert "[metrics] f1 failed on the first batch" in text, text
    assert "preds float32 (16, 3) and targets int64 (16,)" in text and "epoch 1/" not in text


def test_two_ranks_on_an_odd_validation_split_report_what_one_process_would(workdir: Path) -> None:
    """torchmetrics objects sync their states, function sums are all-reduced, an own class is replayed."""
    spec = write_spec(workdir, **{**RARE, "run": {"epochs": 4}, "optimizer": {"lr": 0.05}})
    done = run_cli("run", spec, "--headless", "--nproc-per-node", "2", cwd=workdir, timeout=180)
    assert done.returncode == 0, done.stderr
    run_dir = only_run(workdir / "runs")
    (started,) = [e for e in events(run_dir) if e["event"] == "run_started"]
    assert started["world_size"] == 2 and started["val_size"] == 101
    vals = validations(run_dir)
    assert_like(vals[-1]["metrics"], expected(run_dir / "checkpoints" / "last.pt"))
    m = vals[-1]["metrics"]
    assert m["val_hits"] == pytest.approx(m["val_acc"], abs=1e-7)  # counted exactly, on both sides of the gather
    assert m["val_f1"] > 0.2, m  # not the trivial 0 of a model that predicts no positive
