"""The training engine on tiny CPU models with fixed seeds: exact losses, modes, schedulers,
early stopping, first-batch checks, NaN handling, batch structures and metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import tiny
import torch
from conftest import assert_same_weights, load_ckpt, write_spec
from torch import nn

from tuiloop.engine.batches import Batches
from tuiloop.engine.best import MetricMonitor
from tuiloop.engine.device import to_device
from tuiloop.engine.events import (
    EarlyStopUpdate,
    Event,
    Failed,
    Finished,
    LRChanged,
    Message,
    TrainSteps,
    Validated,
)
from tuiloop.engine.first_batch import PROBLEM_TEXT
from tuiloop.engine.trainer import Options, Trainer
from tuiloop.rundir.layout import read_json
from tuiloop.runner.spec_run import run_spec

CPU = torch.device("cpu")


def train(workdir: Path, *sets: str, **sections: Any) -> tuple[int, list[Event], Path]:
    """Run a spec through the Python API; returns (exit status, events, run directory)."""
    events: list[Event] = []
    code, run_dir = run_spec(write_spec(workdir, **sections), list(sets), sinks=[events.append])
    assert run_dir is not None
    return code, events, run_dir


def of(events: list[Event], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def step_losses(events: list[Event]) -> list[float]:
    return [x for e in of(events, TrainSteps) for x in e.losses]


def finished(events: list[Event]) -> Finished:
    (f,) = of(events, Finished)
    return f


# ---- exact numbers ------------------------------------------------------------------------------
# Computed once with torch 2.13 on CPU: tiny.classes, MLP(hidden=16, dropout=0.2), Adam(lr=0.01),
# batch 16, shuffled, seed 0, two epochs (8 steps each). A change here means runs are no longer
# reproducible from version to version: initialisation, data order or dropout draws changed.
GOLDEN_LOSSES = [
    1.0896676778793335, 1.0977782011032104, 1.12714684009552, 0.9414830207824707,
    1.1314743757247925, 0.9791682958602905, 1.0260709524154663, 1.045681357383728,
    0.9491743445396423, 0.8457283973693848, 0.9083826541900635, 0.8571450114250183,
    0.8035813570022583, 0.8149846792221069, 0.808741569519043, 0.7421972155570984,
]  # fmt: skip
GOLDEN_VAL = [0.9258130788803101, 0.675, 0.7280835986137391, 0.875]  # (val_loss, val_acc) per epoch


@pytest.mark.skipif(
    not torch.__version__.startswith("2.13."),
    reason=f"golden losses were computed with torch 2.13; torch {torch.__version__} may initialise or draw differently",
)
def test_step_losses_and_validations_equal_the_recorded_golden_values(workdir: Path) -> None:
    code, events, _ = train(workdir, "run.epochs=2", model={"dropout": 0.2})
    assert code == 0
    assert step_losses(events) == pytest.approx(GOLDEN_LOSSES, rel=1e-6, abs=1e-7)
    val = [v.metrics[k] for v in of(events, Validated) for k in ("val_loss", "val_acc")]
    assert val == pytest.approx(GOLDEN_VAL, rel=1e-6)
    steps = [e.first_step for e in of(events, TrainSteps)]
    assert steps == sorted(steps) and steps[0] == 1


def test_unshuffled_steps_equal_a_plain_pytorch_loop_loss_for_loss(workdir: Path) -> None:
    """Without shuffling, the engine's steps are the seed's plain loop, loss for loss."""
    code, events, run_dir = train(workdir, "run.epochs=2", "data.shuffle=false", "run.seed=3")
    assert code == 0
    torch.manual_seed(3)
    model = tiny.MLP(4, 3, 16)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    train_set, val_set = tiny.classes(seed=3)
    expected, expected_val = [], []
    for _ in range(2):
        model.train()
        for x, y in torch.utils.data.DataLoader(train_set, batch_size=16):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            expected.append(loss.item())
        model.eval()
        with torch.no_grad():
            x, y = val_set.tensors
            expected_val.append(loss_fn(model(x), y).item())
    assert step_losses(events) == expected  # bitwise: same operations in the same order
    assert [v.metrics["val_loss"] for v in of(events, Validated)] == pytest.approx(expected_val, rel=1e-6)
    assert_same_weights(load_ckpt(run_dir / "checkpoints" / "last.pt")["model_state_dict"], model.state_dict())


# ---- modes --------------------------------------------------------------------------------------
class Recorder(nn.Module):
    """Dropout model that records, per forward, whether it was in training mode and had grad on."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3))
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.net(x)


def make_trainer(
    model: nn.Module,
    options: Options,
    data: Any = None,
    scheduler: Any = None,
    lr: float = 0.01,
    run_dir: Path | None = None,
) -> Trainer:
    """A Trainer built from objects, the way the README's Python API shows."""
    train_set, val_set = data or tiny.classes()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = scheduler(opt) if scheduler else None
    return Trainer(
        model,
        Batches(train_set, CPU, batch_size=16, shuffle=True, seed=0),
        Batches(val_set, CPU, batch_size=16, shuffle=False) if val_set is not None else None,
        nn.CrossEntropyLoss(),
        opt,
        sched,
        options,
        run_dir=run_dir,
    )


def test_train_and_eval_modes_and_deterministic_validation() -> None:
    torch.manual_seed(0)
    model = Recorder()
    trainer = make_trainer(model, Options(epochs=2))
    events: list[Event] = []
    trainer.subscribe(events.append)
    assert trainer.run().status == "completed"
    train_calls, val_calls = model.calls[:8] + model.calls[11:19], model.calls[8:11] + model.calls[19:22]
    assert len(model.calls) == 22  # 8 training + 3 validation batches per epoch
    assert all(c == (True, True) for c in train_calls)
    assert all(c == (False, False) for c in val_calls)
    # validation is deterministic despite dropout 0.5: the reported loss is the eval-mode loss
    model.eval()
    x, y = tiny.classes()[1].tensors
    with torch.no_grad():
        by_hand = nn.CrossEntropyLoss()(model(x), y).item()
        again = nn.CrossEntropyLoss()(model(x), y).item()
    assert by_hand == again
    assert of(events, Validated)[-1].metrics["val_loss"] == pytest.approx(by_hand, rel=1e-6)


# ---- early stopping ----------------------------------------------------------------------------
def test_the_metric_monitor_counts_checks_without_a_min_delta_gain_in_max_and_min_mode_and_restores() -> None:
    m = MetricMonitor("val_acc", "max", min_delta=0.01, patience=2)
    seen = [(m.update(v, i), m.counter, m.triggered) for i, v in enumerate([0.5, 0.505, 0.52, 0.52, 0.51])]
    assert seen == [(True, 0, False), (False, 1, False), (True, 0, False), (False, 1, False), (False, 2, True)]
    assert (m.best, m.best_epoch) == (0.52, 2)
    m = MetricMonitor("val_loss", "min", min_delta=0.1, patience=3)
    seen = [(m.update(v, i), m.counter) for i, v in enumerate([1.0, 0.95, 0.85, float("nan"), 0.7])]
    assert seen == [(True, 0), (False, 1), (True, 0), (False, 1), (True, 0)]
    restored = MetricMonitor("val_loss", "min", 0.1, 3)
    restored.load_state_dict(m.state_dict())
    assert (restored.best, restored.best_epoch, restored.counter) == (0.7, 4, 0)


def test_early_stopping_counts_validation_checks_not_epochs(workdir: Path) -> None:
    """val_every = 2, patience 2: it stops at the third check (epoch 6), not after 2 epochs."""
    es = {"monitor": "val_acc", "mode": "max", "patience": 2, "min_delta": 0.5}  # nothing improves by 0.5
    code, events, run_dir = train(workdir, "run.epochs=20", "run.val_every=2", early_stopping=es)
    assert code == 0
    updates = of(events, EarlyStopUpdate)
    assert [(u.epoch, u.counter, u.triggered) for u in updates] == [(2, 0, False), (4, 1, False), (6, 2, True)]
    assert [v.epoch for v in of(events, Validated)] == [2, 4, 6]
    f = finished(events)
    assert (f.status, f.epochs_done) == ("early_stopped", 6)
    assert "val_acc did not improve for 2 checks" in f.reason
    summary = read_json(run_dir / "summary.json")
    assert summary is not None and summary["status"] == "early_stopped" and summary["epochs_done"] == 6
    # the best checkpoint has no min_delta: it follows every improvement
    accs = {v.epoch: v.metrics["val_acc"] for v in of(events, Validated)}
    assert summary["best_value"] == max(accs.values()) and summary["best_epoch"] == max(
        accs, key=lambda e: (accs[e], -e)
    )


def test_early_stopping_mode_max_follows_the_metric(workdir: Path) -> None:
    code, events, _ = train(
        workdir, "run.epochs=30", early_stopping={"monitor": "val_acc", "patience": 3}, optimizer={"lr": 0.05}
    )
    updates = of(events, EarlyStopUpdate)
    accs = [v.metrics["val_acc"] for v in of(events, Validated)]
    best = -math.inf
    counter = 0
    for u, acc in zip(updates, accs, strict=True):  # recompute the counter by hand: max mode, min_delta 0
        if acc > best:
            best, counter = acc, 0
        else:
            counter += 1
        assert (u.value, u.best, u.counter) == (acc, best, counter)
    # with seed 0 val_acc peaks at epoch 2 (0.975); three checks without a higher value stop it
    assert (finished(events).status, finished(events).epochs_done) == ("early_stopped", 5)
    assert updates[-1].counter == 3 and updates[-1].triggered and not any(u.triggered for u in updates[:-1])


# ---- schedulers -----------------------------------------------------------------------------------
def test_reduce_lr_on_plateau_on_the_monitored_metric(workdir: Path) -> None:
    """With a tiny LR val_loss stalls; patience 1, factor 0.5: the LR halves every second check."""
    sched = {"target": "ReduceLROnPlateau", "factor": 0.5, "patience": 1}
    code, events, _ = train(workdir, "run.epochs=5", optimizer={"lr": 1e-6}, scheduler=sched)
    assert code == 0
    changes = [(c.epoch, c.previous, c.lr) for c in of(events, LRChanged)]
    assert changes == [(3, 1e-6, 5e-7), (5, 5e-7, 2.5e-7)]
    lrs = [e.lr for e in of(events, TrainSteps)]
    assert lrs[0] == 1e-6 and lrs[-1] == 5e-7  # epoch 5 trained at the halved LR


class RecordingPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """A user's subclass: it must still get the metric."""

    def __init__(self, optimizer: torch.optim.Optimizer, **kwargs: Any) -> None:
        super().__init__(optimizer, **kwargs)
        self.seen: list[float] = []

    def step(self, metrics: float, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self.seen.append(float(metrics))
        super().step(metrics)


def test_plateau_subclass_gets_the_scheduler_monitor() -> None:
    torch.manual_seed(0)
    trainer = make_trainer(
        tiny.MLP(), Options(epochs=3, scheduler_monitor="val_acc"), scheduler=lambda o: RecordingPlateau(o, mode="max")
    )
    events: list[Event] = []
    trainer.subscribe(events.append)
    assert trainer.run().status == "completed"
    assert trainer.scheduler.seen == [v.metrics["val_acc"] for v in of(events, Validated)]


def test_a_scheduler_steps_per_batch_or_per_epoch_as_its_interval_says(workdir: Path) -> None:
    sched = {"target": "StepLR", "step_size": 1, "gamma": 0.9, "interval": "step"}
    code, events, _ = train(workdir, "run.epochs=2", scheduler=sched)
    assert code == 0 and finished(events).step == 16
    ev = of(events, TrainSteps)[-1]
    assert ev.lr == pytest.approx(0.01 * 0.9**16, rel=1e-9)
    assert not of(events, LRChanged)  # per-step changes ride on TrainSteps, not one event per step
    sched["interval"] = "epoch"
    code, events, _ = train(workdir, "run.epochs=3", scheduler=sched)
    assert [c.epoch for c in of(events, LRChanged)] == [1, 2, 3]
    assert [c.lr for c in of(events, LRChanged)] == pytest.approx([0.009, 0.0081, 0.00729])
    second = [e.lr for e in of(events, TrainSteps) if e.epoch == 2]
    assert second and second == pytest.approx([0.009] * len(second))


# ---- first-batch checks ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        (
            {"data": {"float_targets": True}},
            ["CrossEntropyLoss needs class indices of dtype torch.long", "torch.float32", "y.long()"],
        ),
        ({"data": {"label_offset": 1}}, ["outputs 3 class scores but the targets contain class 3", "4 outputs"]),
        ({"data": {"num_classes": 5}}, ["outputs 3 class scores but the targets contain class 4", "5 outputs"]),
        ({"model": {"out_features": 1}}, ["1 output", "BCEWithLogitsLoss"]),
        (
            {
                "data": {"target": "tiny.py:regression", "column": False},
                "model": {"out_features": 1},
                "loss": {"target": "MSELoss"},
            },
            ["MSELoss needs outputs and targets of the same shape", "(16, 1)", "(16)", "y.unsqueeze(1)"],
        ),
        (
            {
                "data": {"target": "tiny.py:binary", "column": False},
                "model": {"out_features": 1},
                "loss": {"target": "BCEWithLogitsLoss"},
            },
            ["BCEWithLogitsLoss needs outputs and targets of the same shape", "(16, 1)", "y.unsqueeze(1)"],
        ),
        (
            {
                "data": {"target": "tiny.py:binary", "long_targets": True},
                "model": {"out_features": 1},
                "loss": {"target": "BCEWithLogitsLoss"},
            },
            ["BCEWithLogitsLoss needs float targets", "torch.int64", "y.float()"],
        ),
        (
            {"loss": {"target": "CrossEntropyLoss", "weight": [1.0, 2.0]}},
            ["CrossEntropyLoss's weight ([loss] weight in a spec) has 2 values", "3 class scores", "3 numbers"],
        ),
        (
            {
                "data": {"target": "tiny.py:binary"},
                "model": {"out_features": 1},
                "loss": {"target": "BCEWithLogitsLoss", "pos_weight": [1.0, 2.0]},
            },
            [
                "BCEWithLogitsLoss's pos_weight ([loss] pos_weight in a spec) has 2 values",
                "1 outputs",
                "pos_weight = 3.0",
            ],
        ),
        (
            {"early_stopping": {"monitor": "val_mae"}},
            ["[early_stopping] monitor = 'val_mae' is not reported for this multiclass problem", "val_acc"],
        ),
    ],
)
def test_setup_mistakes_stop_at_the_first_batch(
    workdir: Path, recwarn: pytest.WarningsRecorder, sections: dict[str, Any], expected: list[str]
) -> None:
    code, events, run_dir = train(workdir, **sections)
    assert code == 1
    (failed,) = of(events, Failed)
    for part in expected:
        assert part in failed.error, failed.error
    assert "first batch" in failed.where
    f = finished(events)
    assert (f.status, f.step) == ("failed", 0)
    assert read_json(run_dir / "summary.json")["status"] == "failed"  # type: ignore[index]
    assert not [w for w in recwarn if "broadcast" in str(w.message)], (
        "the check must come before PyTorch's own loss call"
    )


def test_float64_inputs_against_a_float32_model_name_the_fix(workdir: Path) -> None:
    code, events, _ = train(workdir, data={"target": "tiny.py:float64_classes"})
    assert code == 1
    (failed,) = of(events, Failed)
    assert "the inputs are torch.float64 but the model's parameters are torch.float32" in failed.error
    assert "x.float()" in failed.error and "torch.as_tensor(X, dtype=torch.float32)" in failed.error
    assert "first batch" in failed.where


def test_early_stopping_on_the_train_loss_without_a_validation_split(workdir: Path) -> None:
    """Any reported metric can be monitored: without a validation split, the train loss is checked each epoch."""
    es = {"monitor": "train_loss", "patience": 2, "min_delta": 10.0}  # nothing improves by 10: it stops after 3 checks
    code, events, run_dir = train(workdir, "run.epochs=20", data={"target": "tiny.py:train_only"}, early_stopping=es)
    assert code == 0, of(events, Failed)
    f = finished(events)
    assert (f.status, f.epochs_done, f.monitor) == ("early_stopped", 3, "train_loss")
    assert [set(v.metrics) for v in of(events, Validated)] == [{"train_loss"}] * 3
    assert [(u.epoch, u.counter) for u in of(events, EarlyStopUpdate)] == [(1, 0), (2, 1), (3, 2)]
    # the best checkpoint has no min_delta: it follows the train loss, which fell every epoch
    assert load_ckpt(run_dir / "checkpoints" / "best.pt")["epoch"] == f.best_epoch == 3
    # asking for a validation metric without a validation split says what to do
    code, events, _ = train(workdir, data={"target": "tiny.py:train_only"}, early_stopping={"monitor": "val_loss"})
    (failed,) = of(events, Failed)
    assert (
        code == 1
        and "[early_stopping] monitor = 'val_loss' needs a validation split, and the data has none" in failed.error
    )


@pytest.mark.parametrize("folder", ["torch", "tuiloop"])
def test_the_failure_location_is_the_users_line_even_in_a_folder_named_like_a_library(
    tmp_path: Path, folder: str
) -> None:
    """Frames are judged by the import paths of torch and tuiloop, not by folder names."""
    import shutil

    project = tmp_path / folder
    project.mkdir()
    shutil.copy(tiny.__file__, project / "tiny.py")
    (project / "crashy.py").write_text(
        "import torch\n"
        "class Crashy(torch.nn.Linear):\n"
        "    def forward(self, x):\n"
        "        raise ValueError('a bad batch on purpose')\n"
    )
    code, events, _ = train(project, "run.epochs=1", model={"target": "crashy.py:Crashy", "hidden": None})
    assert code == 1
    (failed,) = of(events, Failed)
    assert failed.where.endswith("crashy.py:4 in forward"), failed.where
    assert failed.user_frames == [
        f'File "{project / "crashy.py"}", line 4, in forward',
        "  raise ValueError('a bad batch on purpose')",
    ]


def test_the_engine_imports_neither_the_spec_nor_the_screen() -> None:
    """The engine is a plain library: no spec package, no Textual or Rich."""
    import subprocess
    import sys

    code = (
        "import sys, pkgutil, importlib, tuiloop.engine as e\n"
        "for m in pkgutil.iter_modules(e.__path__):\n    importlib.import_module('tuiloop.engine.' + m.name)\n"
        "bad = sorted(n for n in sys.modules if n.startswith(('tuiloop.spec', 'tuiloop.runner', 'tuiloop.tui', 'tuiloop.cli', 'textual', 'rich')))\n"
        "print(bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_softmax_before_cross_entropy_warns(workdir: Path) -> None:
    code, events, _ = train(workdir, "run.epochs=1", model={"target": "tiny.py:SoftmaxMLP"})
    assert code == 0
    warnings = [m for m in of(events, Message) if m.level == "warning"]
    assert len(warnings) == 1 and "softmax" in warnings[0].text and "raw logits" in warnings[0].text
    code, events, _ = train(workdir, "run.epochs=1")
    assert not [m for m in of(events, Message) if m.level == "warning"]


def test_nan_loss_stops_with_the_last_good_state(workdir: Path) -> None:
    """Sample 40 has a NaN feature; unshuffled batches of 16 put it in step 3."""
    sections = {
        "data": {"target": "tiny.py:with_nan", "shuffle": False},
        "model": {"out_features": 1},
        "loss": {"target": "MSELoss"},
    }
    code, events, run_dir = train(workdir, "run.epochs=3", **sections)
    assert code == 1
    f = finished(events)
    assert f.status == "failed" and f.step == 2
    assert f.reason == "the training loss became nan at step 3"
    (error,) = [m for m in of(events, Message) if m.level == "error"]
    assert "the last good state (before step 3) is saved in checkpoints/last.pt" in error.text
    assert "Lower the learning rate" in error.text
    assert all(math.isfinite(x) for x in step_losses(events))
    ckpt = load_ckpt(run_dir / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2
    assert all(bool(t.isfinite().all()) for t in ckpt["model_state_dict"].values())
    # the same two steps by hand give the same weights
    torch.manual_seed(0)
    model = tiny.MLP(4, 1, 16)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = tiny.with_nan()[0].tensors
    for i in (0, 16):
        opt.zero_grad()
        nn.MSELoss()(model(x[i : i + 16]), y[i : i + 16]).backward()
        opt.step()
    assert_same_weights(ckpt["model_state_dict"], model.state_dict())
    summary = read_json(run_dir / "summary.json")
    assert summary is not None and summary["status"] == "failed" and "nan" in summary["reason"]


# ---- batches ---------------------------------------------------------------------------------------
def test_to_device_moves_nested_structures() -> None:
    meta = torch.device("meta")
    Pair = __import__("collections").namedtuple("Pair", "a b")
    batch = {"x": torch.ones(2), "parts": [torch.zeros(1), (torch.ones(3), Pair(torch.ones(1), 5))], "name": "keep"}
    moved = to_device(batch, meta)
    assert moved["x"].device == meta and moved["parts"][0].device == meta
    assert moved["parts"][1][0].device == meta
    pair = moved["parts"][1][1]
    assert isinstance(pair, Pair) and pair.a.device == meta and pair.b == 5
    assert moved["name"] == "keep" and isinstance(moved["parts"], list) and isinstance(moved["parts"][1], tuple)


def test_dict_batches_are_collated_and_passed_as_keyword_inputs_and_the_model_learns(workdir: Path) -> None:
    """A Dataset of dicts with a nested list: collated by a DataLoader, passed as keyword inputs."""
    code, events, run_dir = train(
        workdir,
        "run.epochs=4",
        model={"target": "tiny.py:DictModel", "hidden": None},
        data={"target": "tiny.py:dict_classes"},
    )
    assert code == 0, of(events, Failed)
    vals = of(events, Validated)
    assert vals[-1].metrics["val_loss"] < vals[0].metrics["val_loss"]
    # the reported accuracy is the model's accuracy on the validation dicts
    model = tiny.DictModel()
    model.load_state_dict(load_ckpt(run_dir / "checkpoints" / "last.pt")["model_state_dict"])
    val = tiny.dict_classes()[1]
    batch = torch.utils.data.default_collate([val[i] for i in range(len(val))])
    with torch.no_grad():
        acc = (model(x=batch["x"], extra=batch["extra"]).argmax(1) == batch["y"]).float().mean().item()
    assert vals[-1].metrics["val_acc"] == pytest.approx(acc)


def test_a_tuple_dataset_and_the_users_own_dataloaders_train_with_their_batch_counts(workdir: Path) -> None:
    code, events, _ = train(workdir, "run.epochs=2", data={"target": "tiny.py:noisy_classes"})
    assert code == 0 and finished(events).step == 16
    code, events, _ = train(workdir, "run.epochs=2", data={"target": "tiny.py:loaders", "batch_size": 20})
    assert code == 0 and finished(events).step == 12  # the user's loader: its batch size (20 -> 6 steps) wins


# ---- problem types and metrics ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("problem", "sections", "metric"),
    [
        ("multiclass", {}, "val_acc"),  # and val_ppl: a cross-entropy
        (
            "binary",
            {
                "data": {"target": "tiny.py:binary"},
                "model": {"out_features": 1},
                "loss": {"target": "BCEWithLogitsLoss"},
            },
            "val_acc",
        ),
        (
            "multilabel",
            {
                "data": {"target": "tiny.py:multilabel"},
                "model": {"out_features": 3},
                "loss": {"target": "BCEWithLogitsLoss"},
            },
            "val_acc",
        ),
        (
            "regression",
            {"data": {"target": "tiny.py:regression"}, "model": {"out_features": 1}, "loss": {"target": "L1Loss"}},
            "val_mae",
        ),
    ],
)
def test_problem_type_and_metric_match_a_hand_computation(
    workdir: Path, problem: str, sections: dict[str, Any], metric: str
) -> None:
    code, events, run_dir = train(workdir, "run.epochs=2", **sections)
    assert code == 0
    val = of(events, Validated)[-1]
    ppl = ["val_ppl"] if problem == "multiclass" else []
    assert set(val.metrics) == {"train_loss", "val_loss", metric, *ppl}
    ckpt = load_ckpt(run_dir / "checkpoints" / "last.pt")
    assert ckpt["problem"] == problem
    (said,) = [m.text for m in of(events, Message) if m.level == "info"]  # what the run decided, once
    reported = ", ".join(["train_loss", "val_loss", metric, *ppl])
    assert said.startswith(PROBLEM_TEXT[problem]) and said.endswith(f"metrics: {reported}")
    model = tiny.MLP(4, sections.get("model", {}).get("out_features", 3), 16)
    model.load_state_dict(ckpt["model_state_dict"])
    data_fn = getattr(tiny, sections.get("data", {}).get("target", "tiny.py:classes").split(":")[1])
    x, y = data_fn()[1].tensors
    with torch.no_grad():
        out = model(x)
    expected = {
        "multiclass": lambda: (out.argmax(1) == y).float().mean(),
        "binary": lambda: ((out > 0).float() == y).float().mean(),
        "multilabel": lambda: ((out > 0).float() == y).float().mean(),  # per label
        "regression": lambda: (out - y).abs().mean(),
    }[problem]().item()
    assert val.metrics[metric] == pytest.approx(expected, rel=1e-5)
    # the train loss reported per epoch is the mean of that epoch's step losses
    epoch_losses = [x for e in of(events, TrainSteps) if e.epoch == 2 for x in e.losses]
    assert val.metrics["train_loss"] == pytest.approx(sum(epoch_losses) / len(epoch_losses))


# ---- Python API -------------------------------------------------------------------------------------
def test_engine_trainer_with_a_run_dir_writes_checkpoints_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trainer = make_trainer(tiny.MLP(), Options(epochs=2, monitor="val_acc", mode="max"), run_dir=tmp_path)
    seen: list[str] = []
    trainer.subscribe(lambda e: seen.append(e.kind))
    f = trainer.run()
    assert (f.status, f.epochs_done, f.step, f.monitor) == ("completed", 2, 16, "val_acc")
    assert seen[0] == "run_started" and seen[-1] == "finished" and "validated" in seen and "checkpoint" in seen
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]
    assert (tmp_path / "checkpoints" / "best.pt").is_file() and (tmp_path / "checkpoints" / "last.pt").is_file()
    trainer2 = make_trainer(tiny.MLP(), Options(epochs=1))  # no run dir: no files, still trains
    assert trainer2.run().status == "completed" and trainer2.save("manual") is None


def test_top_level_names_load_lazily() -> None:
    """``import tuiloop`` does not import torch (attach, show and ls start fast); a name does."""
    import subprocess
    import sys

    code = (
        "import sys, tuiloop\n"
        "assert 'torch' not in sys.modules, 'import tuiloop imported torch'\n"
        "from tuiloop.runner.api import Trainer\n"
        "assert 'torch' in sys.modules and tuiloop.Trainer is Trainer\n"
        "from tuiloop.runner.spec_run import run_spec\n"
        "assert tuiloop.run_spec is run_spec\n"
        "try:\n    tuiloop.no_such_name\nexcept AttributeError:\n    print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr
