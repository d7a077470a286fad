"""Empty data: an empty training split is refused at the start, with the data function named; an
empty validation split means no validation (with a warning), never a perfect score of nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, load_ckpt, only_run, run_cli, write_spec
from runs_support import events, summary
from test_spec_errors import cli_error
from tiny import MLP, classes

import tuiloop
from tuiloop.engine.exceptions import SetupError


@pytest.fixture
def userdir(workdir: Path) -> Path:
    shutil.copy(FIXTURES / "disk_user.py", workdir)
    return workdir


def test_an_empty_training_split_is_refused_at_the_start_naming_the_data_function(
    userdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(userdir, data={"target": "disk_user.py:empty_train"})
    err = cli_error(capsys, "run", spec, "--headless")
    assert err == (
        f"tuiloop: error: {spec}, [data] target: disk_user.py:empty_train returned an empty training split "
        "(0 samples). Check what it loads (a path or a filter that matched nothing?); training needs at least one batch.\n"
    )
    assert not (userdir / "runs").exists()


def test_a_training_split_smaller_than_one_batch_with_drop_last_is_refused(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(workdir, data={"batch_size": 500, "drop_last": True})
    err = cli_error(capsys, "run", spec, "--headless")
    assert "returned an empty training split (120 samples, fewer than one batch of 500 with drop_last)" in err


def test_an_empty_validation_split_trains_without_validation_and_says_so(userdir: Path) -> None:
    spec = write_spec(userdir, data={"target": "disk_user.py:empty_val"}, run={"epochs": 2})
    done = run_cli("run", spec, "--headless", cwd=userdir)
    assert done.returncode == 0, done.stderr
    assert (
        "warning: disk_user.py:empty_val returned an empty validation split (0 samples): training without validation"
        in done.stdout
    )
    assert "val_loss" not in done.stdout and "val_acc" not in done.stdout
    run_dir = only_run(userdir / "runs")
    checks = [e["metrics"] for e in events(run_dir) if e["event"] == "validated"]
    assert len(checks) == 2 and all(set(m) == {"train_loss"} for m in checks), checks
    s = summary(run_dir)
    assert s is not None and s["monitor"] == "train_loss" and s["best_value"] > 0, s
    assert load_ckpt(run_dir / "checkpoints" / "best.pt")["best"]["monitor"] == "train_loss"


def test_a_validation_split_of_unknown_length_that_gives_nothing_fails_instead_of_scoring_zero(userdir: Path) -> None:
    spec = write_spec(userdir, data={"target": "disk_user.py:empty_iterable_val"}, run={"epochs": 2})
    done = run_cli("run", spec, "--headless", cwd=userdir)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    assert (
        "error: the validation data gave no batch; return None as the validation split to train without validation"
        in done.stdout
    )
    assert "*best" not in done.stdout and "0.0000" not in done.stdout
    run_dir = only_run(userdir / "runs")
    assert not any(e["event"] == "validated" for e in events(run_dir))
    assert not (run_dir / "checkpoints" / "best.pt").exists()
    assert (summary(run_dir) or {}).get("status") == "failed"


def _batches(data: torch.utils.data.Dataset) -> tuiloop.Batches:
    return tuiloop.Batches(data, torch.device("cpu"), batch_size=16, shuffle=False)


def test_the_python_trainer_refuses_empty_training_data_and_skips_empty_validation() -> None:
    train, val = classes()
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    model = MLP()
    with pytest.raises(SetupError, match=r"the training data is empty \(0 samples\)"):
        tuiloop.Trainer(
            model, _batches(empty), _batches(val), torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters())
        )
    trainer = tuiloop.Trainer(
        model,
        _batches(train),
        _batches(empty),
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        options=tuiloop.Options(epochs=1),
    )
    seen: list[object] = []
    trainer.subscribe(seen.append)
    finished = trainer.run()
    assert finished.status == "completed" and finished.monitor == "train_loss"
    texts = [getattr(e, "text", "") for e in seen]
    assert "the validation data is empty (0 samples): training without validation" in texts
    assert all(set(getattr(e, "metrics", {})) <= {"train_loss"} for e in seen)
