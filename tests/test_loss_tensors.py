"""Tensor arguments of a loss (``pos_weight``, ``weight``) written in the spec as a number or a list:
tuiloop makes the float32 tensor torch wants; what cannot be one is a spec error naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import only_run, run_cli, write_spec
from runs_support import events

from tuiloop.cli import main
from tuiloop.runner.build import build_trainer
from tuiloop.spec import load_spec, resolve

BINARY = dict(
    model={"target": "tiny.py:MLP", "out_features": 1},
    data={"target": "tiny.py:binary"},
    loss={"target": "BCEWithLogitsLoss", "pos_weight": 17.0},
    run={"epochs": 1},
)


def test_a_number_for_pos_weight_trains_a_binary_problem_from_the_command(workdir: Path) -> None:
    r = run_cli("run", write_spec(workdir, **BINARY), "--headless", cwd=workdir)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "finished: completed" in r.stdout
    run_dir = only_run(workdir / "runs")
    assert "pos_weight = 17.0" in (run_dir / "spec.toml").read_text()  # the saved spec keeps what was written
    assert [e["event"] for e in events(run_dir)].count("validated") == 1

    loss = build_trainer(resolve(load_spec(write_spec(workdir, **BINARY)))).loss_fn
    assert isinstance(loss, torch.nn.BCEWithLogitsLoss)
    assert loss.pos_weight.dtype == torch.float32 and loss.pos_weight.tolist() == 17.0


def test_a_list_of_class_weights_trains_with_cross_entropy_from_the_command(workdir: Path) -> None:
    spec = write_spec(workdir, loss={"target": "CrossEntropyLoss", "weight": [1, 2.5, 4]}, run={"epochs": 1})
    r = run_cli("run", spec, "--headless", cwd=workdir)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "finished: completed" in r.stdout

    loss = build_trainer(resolve(load_spec(spec))).loss_fn
    assert loss.weight.dtype == torch.float32 and loss.weight.tolist() == [1.0, 2.5, 4.0]


def test_class_weights_of_the_wrong_length_stop_at_the_first_batch_naming_the_key(workdir: Path) -> None:
    spec = write_spec(workdir, loss={"target": "CrossEntropyLoss", "weight": [1.0, 2.0]}, run={"epochs": 1})
    r = run_cli("run", spec, "--headless", cwd=workdir)
    assert r.returncode == 1, r.stderr + r.stdout
    assert "Traceback" not in r.stdout + r.stderr
    assert "([loss] weight in a spec) has 2 values, but the model outputs 3 class scores" in r.stdout
    assert "Give one weight per class (3 numbers)" in r.stdout
    assert "weight tensor should be defined" not in r.stdout  # torch's own wording is not what the user reads
    assert "finished: failed" in r.stdout


@pytest.mark.parametrize(
    ("value", "got"),
    [("x", "got 'x' (a string)"), (True, "got True (a boolean)"), ([], "got [] (an array)")],
)
def test_a_tensor_argument_that_is_no_number_or_list_names_the_key_and_the_fix(
    workdir: Path, capsys: pytest.CaptureFixture[str], value: object, got: str
) -> None:
    spec = write_spec(workdir, **{**BINARY, "loss": {"target": "BCEWithLogitsLoss", "pos_weight": value}})
    assert main(["run", str(spec), "--headless"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tuiloop: error: {spec}, [loss] pos_weight: "), err
    assert f"BCEWithLogitsLoss takes a tensor as pos_weight, made from a number or a list of numbers, {got}" in err
    assert "Write it as, for example, pos_weight = 2.0 or pos_weight = [1.0, 2.0]." in err
    assert "Traceback" not in err and "code of BCEWithLogitsLoss" not in err


def test_a_ragged_list_says_the_inner_lists_differ(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(workdir, **{**BINARY, "loss": {"target": "BCEWithLogitsLoss", "pos_weight": [[1.0], [1.0, 2.0]]}})
    assert main(["run", str(spec), "--headless"]) == 2
    err = capsys.readouterr().err
    assert "[loss] pos_weight: pos_weight = [[1.0], [1.0, 2.0]] does not make a tensor" in err
    assert "Give every inner list the same length." in err


def test_a_users_loss_with_a_tensor_annotation_gets_a_tensor_too(workdir: Path) -> None:
    (workdir / "losses.py").write_text(
        "from __future__ import annotations\n"
        "from typing import Optional\n"
        "import torch\n"
        "class Weighted(torch.nn.Module):\n"
        "    def __init__(self, weight: Optional[torch.Tensor] = None, scale: float = 1.0) -> None:\n"
        "        super().__init__()\n"
        "        self.weight, self.scale = weight, scale\n"
        "    def forward(self, out, y):\n"
        "        return torch.nn.functional.cross_entropy(out, y, weight=self.weight) * self.scale\n"
    )
    spec = write_spec(workdir, loss={"target": "losses.py:Weighted", "weight": [1, 1, 2], "scale": 2})
    loss = build_trainer(resolve(load_spec(spec))).loss_fn
    assert isinstance(loss.weight, torch.Tensor) and loss.weight.tolist() == [1.0, 1.0, 2.0]
    assert loss.scale == 2  # not a tensor argument: as written
