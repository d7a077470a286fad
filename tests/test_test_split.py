"""A test split evaluated once at the end of a run, and ``tuiloop eval``, as a user meets them.

The CLI runs share one finished run (a module fixture): a data function returning (train, val,
test), a metric of one's own, and best.pt following val_acc, whose best check (epoch 2) is not
the last (epoch 3), so the test's numbers tell best.pt's weights from the final ones. The stops
and the missing best.pt go through the Python API, in this process.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import tiny
import torch
from conftest import FIXTURES, load_ckpt, only_run, run_cli, write_spec
from runs_support import events, summary
from torch import nn

import tuiloop
from tuiloop.engine.events import CheckpointSaved, Event, Message, Tested, Validated

CPU = torch.device("cpu")
N, N_VAL, N_TEST = 200, 40, 41
TESTED = {"test_loss", "test_acc", "test_ppl", "test_hits"}


def one_process_test(ckpt: Path) -> dict[str, float]:
    """test_loss, test_acc and test_hits of a checkpoint's weights on the test split, in one batch here."""
    model = tiny.MLP(4, 3, 16)
    model.load_state_dict(load_ckpt(ckpt)["model_state_dict"])
    x, y = tiny.classes_with_test(n=N, n_val=N_VAL, n_test=N_TEST)[2].tensors
    with torch.no_grad():
        out = model(x)
    right = (out.argmax(1) == y).sum().item()
    return {
        "test_loss": nn.functional.cross_entropy(out, y).item(),
        "test_acc": right / len(y),
        "test_hits": right / len(y),
    }


@dataclass
class Finished:
    work: Path
    done: subprocess.CompletedProcess

    @property
    def run_dir(self) -> Path:
        return only_run(self.work / "runs")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    work = tmp_path_factory.mktemp("tested")
    shutil.copy(FIXTURES / "tiny.py", work / "tiny.py")
    spec = write_spec(
        work,
        data={"target": "tiny.py:classes_with_test", "n": N, "n_val": N_VAL, "n_test": N_TEST},
        metrics={"hits": "tiny.py:Hits"},
        checkpoint={"monitor": "val_acc"},
    )
    return Finished(work, run_cli("run", spec, "--headless", cwd=work))


def test_the_test_split_is_evaluated_on_best_pt_when_the_run_ends(finished: Finished) -> None:
    done = finished.done
    assert done.returncode == 0, done.stderr
    run_dir = finished.run_dir
    s = summary(run_dir)
    assert s["status"] == "completed" and s["best_epoch"] == 2, s  # best.pt is not the last epoch's weights
    test = s["test"]
    assert (test["checkpoint"], test["epoch"], test["samples"]) == ("checkpoints/best.pt", 2, N_TEST)
    assert set(test["metrics"]) == TESTED
    expected = one_process_test(run_dir / "checkpoints" / "best.pt")
    assert test["metrics"]["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-6)
    assert test["metrics"]["test_acc"] == expected["test_acc"]  # the count over the size, exactly
    assert test["metrics"]["test_hits"] == pytest.approx(expected["test_hits"], rel=1e-6)  # a float32 mean
    assert test["metrics"]["test_ppl"] == pytest.approx(math.exp(test["metrics"]["test_loss"]), rel=1e-12)
    assert one_process_test(run_dir / "checkpoints" / "last.pt")["test_loss"] != pytest.approx(expected["test_loss"])
    log = events(run_dir)
    kinds = [e["event"] for e in log]
    assert kinds.index("tested") == kinds.index("finished") - 1  # after the last save, before the end
    (tested,) = [e for e in log if e["event"] == "tested"]
    best_saves = [e for e in log if e["event"] == "checkpoint" and e["tag"] == "best"]
    assert tested["sha256"] == test["sha256"] == best_saves[-1]["sha256"]  # the file its save recorded
    assert tested["metrics"] == test["metrics"]
    assert "test split on checkpoints/best.pt (epoch 2), 41 samples: test_loss" in done.stdout


def test_show_and_export_have_the_test_split(finished: Finished) -> None:
    run_dir = finished.run_dir
    shown = run_cli("show", run_dir, cwd=finished.work)
    assert shown.returncode == 0, shown.stderr
    assert "test split on checkpoints/best.pt (epoch 2), 41 samples: test_loss" in shown.stdout
    exported = run_cli("export", run_dir, "-o", "-", cwd=finished.work)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert rows[-1]["kind"] == "test" and rows[-1]["epoch"] == "2"
    assert float(rows[-1]["test_loss"]) == summary(run_dir)["test"]["metrics"]["test_loss"]
    assert all(row["test_loss"] == "" for row in rows[:-1])


def test_the_monitor_shows_the_test_values_beside_the_validation_metrics(finished: Finished) -> None:
    from tuiloop.rundir.eventlog import read_events
    from tuiloop.tui.model import MonitorModel
    from tuiloop.tui.panels.training import metrics_text

    model = MonitorModel()
    model.apply_all(read_events(finished.run_dir)[0])
    lines = metrics_text(model, 60).plain.splitlines()
    assert lines[0].split() == ["last", "best", "ep", "test"]
    test = summary(finished.run_dir)["test"]["metrics"]
    (row,) = [line for line in lines if line.startswith("val_loss ")]
    assert f"{test['test_loss']:.4f}" in row
    assert any(entry.text.startswith("test split on checkpoints/best.pt") for entry in model.log)


def test_eval_json_gives_the_same_numbers_as_the_test_at_the_end_and_writes_nothing(finished: Finished) -> None:
    run_dir = finished.run_dir
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    done = run_cli("eval", run_dir.name, "--json", "--out-dir", run_dir.parent, cwd=finished.work)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    test = summary(run_dir)["test"]
    assert got["metrics"] == test["metrics"]  # exactly: the same weights, data and code
    assert (got["checkpoint"], got["sha256"], got["epoch"], got["split"]) == (
        "checkpoints/best.pt",
        test["sha256"],
        2,
        "test",
    )
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before

    val = run_cli("eval", run_dir, "--split", "val", "--checkpoint", "last", cwd=finished.work)
    assert val.returncode == 0, val.stderr
    last = [e for e in events(run_dir) if e["event"] == "validated"][-1]["metrics"]
    assert (
        val.stdout.splitlines()[0] == f"checkpoints/last.pt (epoch 3, step 24) on the validation split, {N_VAL} samples"
    )
    assert f"val_loss  {last['val_loss']:.4f}" in val.stdout and f"val_hits  {last['val_hits']:.4f}" in val.stdout


def test_eval_refuses_what_it_cannot_evaluate_with_one_paragraph(finished: Finished, tmp_path: Path) -> None:
    work, run_dir = finished.work, finished.run_dir

    def refused(*args: str | Path) -> str:
        done = run_cli("eval", *args, cwd=work)
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr and done.stdout == ""
        return done.stderr

    assert (
        "the run has no checkpoints/epoch-0001.pt. Evaluate one it has: --checkpoint NAME, one of best.pt, last.pt"
        in refused(run_dir, "--checkpoint", "epoch-0001.pt")
    )
    assert "tiny.py:classes_with_test returns no test split. Make it return (train, val, test)" in refused(
        run_dir, "--set", "data.test=false"
    )
    assert "there is no such split. Pass --split val or --split test" in refused(run_dir, "--split", "train")
    assert "no run directory 'nothere'" in refused("nothere")
    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir, damaged, ignore=shutil.ignore_patterns("run.lock"))
    best = damaged / "checkpoints" / "best.pt"
    data = bytearray(best.read_bytes())
    data[len(data) // 2] ^= 1
    best.write_bytes(bytes(data))
    text = refused(damaged)
    assert "checkpoints/best.pt is not the file this run saved there" in text and "one of last.pt" in text


def test_a_data_function_returning_four_things_is_told_the_shapes_it_may_return(workdir: Path) -> None:
    (workdir / "four.py").write_text("import tiny\n\ndef four():\n    return (*tiny.classes_with_test(), None)\n")
    done = run_cli(
        "run", write_spec(workdir, data={"target": "four.py:four"}), "--headless", cwd=workdir
    )  # four.py imports tiny from the spec's folder
    assert done.returncode == 2, done.stderr
    assert "must return (train, val) or (train, val, test), got a tuple of 4 items" in done.stderr


# ---- the Python API: the endings that test, and the one without best.pt ------------------------------
def api_trainer(run_dir: Path | None, **options: object) -> tuiloop.Trainer:
    torch.manual_seed(0)
    train_set, val_set, test_set = tiny.classes_with_test()
    model = tiny.MLP()
    return tuiloop.Trainer(
        model,
        tuiloop.Batches(train_set, CPU, batch_size=16, shuffle=True),
        tuiloop.Batches(val_set, CPU, batch_size=64, shuffle=False),
        nn.CrossEntropyLoss(),
        torch.optim.Adam(model.parameters(), lr=0.01),
        options=tuiloop.Options(**{"epochs": 3, "run_name": "api", **options}),  # type: ignore[arg-type]
        run_dir=run_dir,
        test=tuiloop.Batches(test_set, CPU, batch_size=16, shuffle=False),
    )


def test_a_run_stopped_by_a_command_is_tested_on_best_pt(tmp_path: Path) -> None:
    trainer = api_trainer(tmp_path / "run")
    seen: list[Event] = []

    def stop_after_the_first_check(ev: Event) -> None:
        seen.append(ev)
        if isinstance(ev, Validated):
            trainer.request_stop("stopped by the q key")

    trainer.subscribe(stop_after_the_first_check)
    finished = trainer.run()
    assert finished.status == "stopped"
    (tested,) = [e for e in seen if isinstance(e, Tested)]
    assert (tested.checkpoint, tested.epoch) == ("checkpoints/best.pt", 1)
    expected = one_process_test_default(tmp_path / "run" / "checkpoints" / "best.pt")
    assert tested.metrics["test_loss"] == pytest.approx(expected, rel=1e-6)
    assert trainer.tested == tested
    assert read_summary(tmp_path / "run")["test"]["metrics"] == tested.metrics


def test_without_best_pt_the_final_weights_are_tested_and_the_event_says_so() -> None:
    trainer = api_trainer(None, epochs=2)  # no run directory: no checkpoint at all
    seen: list[Event] = []
    trainer.subscribe(seen.append)
    assert trainer.run().status == "completed"
    (tested,) = [e for e in seen if isinstance(e, Tested)]
    assert (tested.checkpoint, tested.epoch, tested.step, tested.sha256) == ("", 2, 16, None)
    assert set(tested.metrics) == {"test_loss", "test_acc", "test_ppl"}
    assert not [e for e in seen if isinstance(e, Message) and e.level == "warning"]


def test_a_best_pt_changed_since_its_save_is_not_tested(tmp_path: Path) -> None:
    trainer = api_trainer(tmp_path / "run", epochs=2)
    seen: list[Event] = []

    def spoil_best_pt(ev: Event) -> None:
        seen.append(ev)
        if isinstance(ev, CheckpointSaved) and ev.tag == "last" and ev.epoch == 2:  # the run's last save
            path = tmp_path / "run" / "checkpoints" / "best.pt"
            path.write_bytes(path.read_bytes()[:-1] + b"x")

    trainer.subscribe(spoil_best_pt)
    assert trainer.run().status == "completed"
    (tested,) = [e for e in seen if isinstance(e, Tested)]
    assert (tested.checkpoint, tested.epoch, tested.sha256) == ("", 2, None)  # the final weights, and why:
    warnings = [e.text for e in seen if isinstance(e, Message) and e.level == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith("checkpoints/best.pt is not the file this run saved there")
    assert warnings[0].endswith("the test split is evaluated on the weights the run ended with")


def one_process_test_default(ckpt: Path) -> float:
    model = tiny.MLP()
    model.load_state_dict(load_ckpt(ckpt)["model_state_dict"])
    x, y = tiny.classes_with_test()[2].tensors
    with torch.no_grad():
        return nn.functional.cross_entropy(model(x), y).item()


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


# ---- two ranks: each tests its shard of the split, in lockstep, and the numbers are one process's ----------
def test_two_ranks_test_an_odd_split_on_best_pt_exactly_as_one_process(workdir: Path) -> None:
    """41 test samples in batches of 8 on 2 gloo ranks (21 and 20): rank 0 reads best.pt and sends its
    weights; the loss sums, the accuracy count and the replayed own metric equal one process's."""
    spec = write_spec(
        workdir,
        run={"nproc_per_node": 2},
        data={"target": "tiny.py:classes_with_test", "n": N, "n_val": N_VAL, "n_test": N_TEST, "val_batch_size": 8},
        metrics={"hits": "tiny.py:Hits"},
        checkpoint={"monitor": "val_loss", "mode": "max"},  # the worst check: best.pt is not the final weights
    )
    done = run_cli("run", spec, "--headless", cwd=workdir)
    assert done.returncode == 0, (done.stdout, done.stderr)
    run_dir = only_run(workdir / "runs")
    assert "distributed: 2 processes (gloo)" in done.stdout
    s = summary(run_dir)
    test = s["test"]
    assert s["best_epoch"] < s["epochs_done"], s
    assert (test["checkpoint"], test["epoch"], test["samples"]) == ("checkpoints/best.pt", s["best_epoch"], N_TEST)
    expected = one_process_test(run_dir / "checkpoints" / "best.pt")
    assert test["metrics"]["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-6)
    assert test["metrics"]["test_acc"] == expected["test_acc"]
    assert test["metrics"]["test_hits"] == pytest.approx(expected["test_hits"], rel=1e-6)
    assert len([e for e in events(run_dir) if e["event"] == "tested"]) == 1  # rank 0 alone writes the log


def test_a_resumed_run_tests_the_best_pt_an_earlier_session_saved(workdir: Path) -> None:
    """best.pt of the first session (the worst val_loss: epoch 1) is checked against the save its log
    recorded, and tested when the resumed run ends."""
    spec = write_spec(
        workdir,
        run={"epochs": 2},
        data={"target": "tiny.py:classes_with_test"},
        checkpoint={"monitor": "val_loss", "mode": "max"},
    )
    assert run_cli("run", spec, "--headless", cwd=workdir).returncode == 0
    run_dir = only_run(workdir / "runs")
    done = run_cli("run", "--resume", run_dir, "--set", "run.epochs=3", "--headless", cwd=workdir)
    assert done.returncode == 0, done.stderr
    tested = [e for e in events(run_dir) if e["event"] == "tested"]
    assert [(t["checkpoint"], t["epoch"]) for t in tested] == [("checkpoints/best.pt", 1)] * 2
    assert summary(run_dir)["test"]["epoch"] == 1 and "warning" not in done.stdout
