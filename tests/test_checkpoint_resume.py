"""Exact resume through the Python API: stop anywhere (a stop command mid-epoch, or after epoch k),
resume from last.pt, and get bitwise the weights of the uninterrupted run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import assert_same_weights, load_ckpt, write_spec

from tuiloop.engine.events import CheckpointSaved, Event, TrainSteps
from tuiloop.engine.trainer import Trainer
from tuiloop.runner.build import build_trainer
from tuiloop.spec import load_spec, resolve


def make(workdir: Path, tag: str, *sets: str, **sections: Any) -> Trainer:
    """A Trainer from a spec, writing checkpoints to ``workdir/tag`` (what the session does)."""
    spec = load_spec(write_spec(workdir, **sections), list(sets))
    trainer = build_trainer(resolve(spec))
    trainer.run_dir = workdir / tag
    (trainer.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    return trainer


def stop_after(trainer: Trainer, step: int) -> None:
    """Send 'stop' from a sink once ``step`` steps are reported (log_interval ~0: every step)."""

    def sink(e: Event) -> None:
        if isinstance(e, TrainSteps) and e.first_step + len(e.losses) - 1 == step:
            trainer.commands.send("stop")

    trainer.subscribe(sink)


def full_state(trainer: Trainer) -> dict[str, Any]:
    return {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "rng": torch.get_rng_state(),
    }


def assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert_same_weights(a["model"], b["model"])
    for (ka, va), (kb, vb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items(), strict=True):
        assert ka == kb
        assert_same_weights(va, vb)
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert torch.equal(a["rng"], b["rng"])


CASES = {
    # dropout draws from the global RNG; TensorDataset takes the index_select path
    "tensors+dropout": dict(model={"dropout": 0.3}),
    # a plain Dataset drawing noise per sample: the DataLoader path, RNG used while loading
    "noisy-dataloader": dict(model={"dropout": 0.3}, data={"target": "tiny.py:noisy_classes"}),
    # dict samples with nested lists through the DataLoader path, per-step scheduler
    "dicts+step-scheduler": dict(
        model={"target": "tiny.py:DictModel", "hidden": None},
        data={"target": "tiny.py:dict_classes"},
        scheduler={"target": "StepLR", "step_size": 5, "gamma": 0.5, "interval": "step"},
    ),
    # the user's own shuffling DataLoader: its order comes from the global RNG at the epoch's start
    "user-shuffled-loader": dict(
        model={"dropout": 0.3}, data={"target": "tiny.py:loaders", "shuffled": True, "noise": 0.3}
    ),
    # ... with worker processes drawing the augmentation noise
    "user-loader-workers": dict(data={"target": "tiny.py:loaders", "shuffled": True, "noise": 0.3, "workers": 2}),
    # ReduceLROnPlateau state and early stopping on val_acc
    "plateau+early-stopping": dict(
        model={"dropout": 0.3},
        optimizer={"lr": 0.05},
        scheduler={"target": "ReduceLROnPlateau", "patience": 0, "factor": 0.5},
        early_stopping={"monitor": "val_acc", "patience": 4},
    ),
}


@pytest.mark.parametrize("stop_at", [3, 8, 11, 17], ids=lambda s: f"stop@{s}")
@pytest.mark.parametrize("case", list(CASES))
def test_stop_command_then_resume_is_bitwise_exact(workdir: Path, case: str, stop_at: int) -> None:
    sets = ("run.epochs=3", "run.log_interval=1e-9")
    ref = make(workdir, "ref", *sets, **CASES[case])
    done = ref.run()
    assert done.status == "completed"

    first = make(workdir, "cut", *sets, **CASES[case])
    stop_after(first, stop_at)
    stopped = first.run()
    assert (stopped.status, stopped.step) == ("stopped", stop_at)
    ck = load_ckpt(workdir / "cut" / "checkpoints" / "last.pt")
    assert (ck["step"], ck["epoch"] * 8 + ck["batch_in_epoch"]) == (stop_at, stop_at)

    second = make(workdir, "cut", *sets, **CASES[case])
    second.resume(workdir / "cut" / "checkpoints" / "last.pt")
    resumed = second.run()
    assert (resumed.status, resumed.step, resumed.epochs_done) == (done.status, done.step, done.epochs_done)
    assert_same_state(full_state(second), full_state(ref))
    assert (resumed.best_value, resumed.best_epoch) == (done.best_value, done.best_epoch)
    assert_same_weights(
        load_ckpt(workdir / "cut" / "checkpoints" / "best.pt")["model_state_dict"],
        load_ckpt(workdir / "ref" / "checkpoints" / "best.pt")["model_state_dict"],
    )


def test_resume_keeps_the_early_stopping_counter(workdir: Path) -> None:
    """Stopped with the counter at 2 of 3, the resumed run stops one check later, as the whole run did."""
    es = {"monitor": "val_acc", "mode": "max", "patience": 3, "min_delta": 0.5}  # nothing improves by 0.5
    ref = make(workdir, "ref", "run.epochs=20", early_stopping=es)
    done = ref.run()
    assert (done.status, done.epochs_done) == ("early_stopped", 4)

    first = make(workdir, "cut", "run.epochs=3", early_stopping=es)
    assert first.run().status == "completed"
    ck = load_ckpt(workdir / "cut" / "checkpoints" / "last.pt")
    assert ck["early_stopping"]["counter"] == 2 and ck["epoch"] == 3

    second = make(workdir, "cut", "run.epochs=20", early_stopping=es)
    second.resume(workdir / "cut" / "checkpoints" / "last.pt")
    assert second.es is not None and second.es.counter == 2 and second.es.best == ref.es.best  # type: ignore[union-attr]
    resumed = second.run()
    assert (resumed.status, resumed.epochs_done, resumed.best_value, resumed.best_epoch) == (
        "early_stopped",
        4,
        done.best_value,
        done.best_epoch,
    )
    assert_same_weights(second.model.state_dict(), ref.model.state_dict())


def test_pause_and_save_now_do_not_change_the_result(workdir: Path) -> None:
    """Pause, resume and save-now at step boundaries leave training bitwise untouched."""
    ref = make(workdir, "ref", "run.epochs=2", model={"dropout": 0.3})
    ref.run()
    run = make(workdir, "cmd", "run.epochs=2", "run.log_interval=1e-9", model={"dropout": 0.3})
    sent: list[str] = []

    def sink(e: Event) -> None:
        if isinstance(e, TrainSteps) and e.first_step == 5 and not sent:
            for cmd in ("save", "pause", "pause", "resume", "resume"):
                run.commands.send(cmd)
                sent.append(cmd)

    seen: list[Event] = []
    run.subscribe(sink)
    run.subscribe(seen.append)
    assert run.run().status == "completed"
    assert_same_weights(run.model.state_dict(), ref.model.state_dict())
    manual = load_ckpt(workdir / "cmd" / "checkpoints" / "manual-step0000005.pt")
    assert manual["step"] == 5 and manual["batch_in_epoch"] == 5 and manual["epoch"] == 0  # epochs completed
    (saved,) = [e for e in seen if isinstance(e, CheckpointSaved) and e.tag == "manual"]
    assert saved.epoch == 1, "the log names the epoch the save was made in, as the screen counts it"


def test_a_checkpoint_that_tracks_another_metric_is_refused(workdir: Path) -> None:
    """Its best value and early-stopping counter mean nothing for another monitor or direction."""
    from tuiloop.engine.exceptions import ResumeError

    first = make(workdir, "cut", "run.epochs=1", early_stopping={"monitor": "val_loss", "patience": 3})
    assert first.run().status == "completed"
    last = workdir / "cut" / "checkpoints" / "last.pt"
    other = make(
        workdir,
        "cut",
        "run.epochs=2",
        checkpoint={"monitor": "val_acc"},
        early_stopping={"monitor": "val_loss", "patience": 3},
    )
    with pytest.raises(
        ResumeError, match=r"\[checkpoint\] state tracks val_loss \(min\), but the spec monitors val_acc \(max\)"
    ):
        other.resume(last)
    other = make(
        workdir,
        "cut",
        "run.epochs=2",
        early_stopping={"monitor": "val_loss", "mode": "max", "patience": 3},
        checkpoint={"monitor": "val_loss", "mode": "min"},
    )
    with pytest.raises(
        ResumeError, match=r"\[early_stopping\] state tracks val_loss \(min\), but the spec monitors val_loss \(max\)"
    ):
        other.resume(last)
