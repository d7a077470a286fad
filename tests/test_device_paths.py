"""The code paths a run takes on CUDA, on MPS and in distributed runs, exercised on the CPU.

* The deferred NaN check: off the CPU, a step's loss stays on the device and the flush finds a
  NaN (one host sync per flush, not per step); it must still stop the run within one flush
  interval and name the step that went wrong.
* Resume loads the checkpoint onto the CPU, whatever the run's device, so the saved RNG states
  stay CPU ByteTensors (``torch.set_rng_state`` takes nothing else).
* Validation sums are float64 except on MPS, which has no float64.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import write_spec

from tuiloop.engine import problem
from tuiloop.engine.events import Event, Failed, Finished, Message, TrainSteps, Validated
from tuiloop.engine.trainer import Trainer
from tuiloop.runner.build import build_trainer
from tuiloop.spec import load_spec, resolve


def make(workdir: Path, tag: str, *sets: str, **sections: Any) -> Trainer:
    """A Trainer from a spec, writing checkpoints to ``workdir/tag`` (what the session does)."""
    trainer = build_trainer(resolve(load_spec(write_spec(workdir, **sections), list(sets))))
    trainer.run_dir = workdir / tag
    (trainer.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    return trainer


def of(events: list[Event], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


# ---- the deferred NaN check (CUDA, MPS, distributed) -------------------------------------------
DELAY = 0.01  # seconds each training forward sleeps: a lower bound on a step's time
NAN_DATA = {"target": "tiny.py:with_nan", "n": 320, "shuffle": False}  # sample 40: step 3 of 20 (batches of 16)


@pytest.mark.parametrize(
    ("interval", "found_at"),  # the steps the flush that finds the NaN may follow
    [(0.05, range(3, 3 + math.ceil(0.05 / DELAY) + 2)), (1e9, range(20, 21))],  # 20: the epoch's last flush
    ids=["flush every 50 ms", "flush at the epoch's end"],
)
def test_the_deferred_nan_check_stops_the_run_within_one_flush_interval(
    workdir: Path, interval: float, found_at: range
) -> None:
    """Off the CPU (and in a distributed run) the trainer does not read each loss back: the flush
    finds the NaN. A step takes at least DELAY here, so the flush that follows step 3 comes at
    most interval / DELAY steps later (or at the epoch's end); the run fails there, names step 3,
    and does not go on to validate or save the NaN weights."""
    trainer = make(
        workdir,
        "nan",
        "run.epochs=2",
        f"run.log_interval={interval}",
        data=NAN_DATA,
        model={"out_features": 1, "delay": DELAY},
        loss={"target": "MSELoss"},
    )
    assert trainer.telemetry.exact_nan_check, "on the CPU the check is exact"
    trainer.telemetry.exact_nan_check = False  # what __init__ sets for a CUDA or MPS device and for a distributed run
    assert trainer.steps_per_epoch() == 20
    events: list[Event] = []
    trainer.subscribe(events.append)
    f = trainer.run()
    assert f.status == "failed" and f.reason == "the training loss became nan at step 3"
    assert f.step in found_at, f"the NaN of step 3 was found after step {f.step}"
    (error,) = [m for m in of(events, Message) if m.level == "error"]
    assert error.text.startswith(
        "the training loss became nan at step 3; training stopped and the weights after it are not saved"
    )
    assert "Lower the learning rate" in error.text
    assert not of(events, Failed) and not of(events, Validated), "no validation on NaN weights"
    assert not list((workdir / "nan" / "checkpoints").iterdir()), "no checkpoint of NaN weights"
    # the losses were reported up to the flush that found the NaN, the first two finite
    losses = [x for e in of(events, TrainSteps) for x in e.losses]
    assert len(losses) == f.step
    assert all(math.isfinite(x) for x in losses[:2]) and math.isnan(losses[2])
    assert of(events, Finished) == [f]


# ---- resume on CUDA and MPS ------------------------------------------------------------------
def test_resume_loads_the_checkpoint_onto_the_cpu_whatever_the_device(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Trainer.resume`` maps the checkpoint to the CPU (load_state_dict moves the weights and the
    optimizer state to the model's device): the RNG states stay CPU ByteTensors. A run whose
    device is CUDA (or MPS) must not load them there: torch.set_rng_state rejects those."""
    first = make(workdir, "run", "run.epochs=1")
    assert first.run().status == "completed"
    path = workdir / "run" / "checkpoints" / "last.pt"
    calls: list[tuple[Any, dict[str, Any]]] = []
    real_load = torch.load

    def recording_load(*args: Any, **kwargs: Any) -> Any:
        loaded = real_load(*args, **kwargs)
        calls.append((kwargs.get("map_location"), loaded))
        return loaded

    monkeypatch.setattr(torch, "load", recording_load)
    second = make(workdir, "run", "run.epochs=2")
    second.device = torch.device("cuda")  # as on a GPU box; with map_location=device this would not load here
    torch.manual_seed(123)  # a different RNG state, which the resume must replace
    second.resume(path)
    (map_location, loaded) = calls[-1]
    assert torch.device(map_location) == torch.device("cpu")
    rng = loaded["rng_state"]["torch"]
    assert rng.device.type == "cpu" and rng.dtype == torch.uint8
    assert torch.equal(torch.get_rng_state(), rng)
    assert (second.epoch, second.step) == (1, first.step)
    second.device = torch.device("cpu")
    assert second.run().status == "completed"


# ---- validation sums on MPS ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("device", "dtype"),
    [
        ("cpu", torch.float64),
        ("cuda", torch.float64),
        ("cuda:1", torch.float64),
        ("mps", torch.float32),
        ("mps:0", torch.float32),
    ],
)
def test_validation_sums_are_float64_except_on_mps(device: str, dtype: torch.dtype) -> None:
    assert problem.sum_dtype(torch.device(device)) == dtype


def test_metric_totals_use_the_sum_dtype_and_float32_sums_give_the_same_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What validation on MPS does, on the CPU: float32 sums, the same metrics to float32 precision."""
    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 3, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(5)]
    loss_fn = torch.nn.CrossEntropyLoss()

    def metrics() -> tuple[torch.dtype, dict[str, float]]:
        totals = problem.MetricTotals("multiclass", loss_fn, cpu)
        for out, y in batches:
            totals.add(loss_fn(out, y), out, y, len(y))
        return totals.loss_sum.dtype, totals.result()

    dtype64, wide = metrics()
    monkeypatch.setattr(problem, "sum_dtype", lambda device: torch.float32)
    dtype32, narrow = metrics()
    assert (dtype64, dtype32) == (torch.float64, torch.float32)
    assert set(narrow) == set(wide) == {"val_loss", "val_acc"}
    for key in wide:
        assert narrow[key] == pytest.approx(wide[key], rel=1e-6)
