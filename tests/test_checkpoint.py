"""Run directory layout and checkpoints: plain weights_only dicts, unwrapped keys, atomic under SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tiny
import torch
from conftest import FIXTURES, assert_same_weights, cli_env, load_ckpt, write_spec
from runs_support import wait_until
from torch import nn

from tuiloop.engine.batches import Batches
from tuiloop.engine.checkpoint import remove_stale_temps, unwrap
from tuiloop.engine.events import CheckpointSaved, Event
from tuiloop.engine.trainer import Options, Trainer
from tuiloop.rundir.eventlog import read_events
from tuiloop.rundir.layout import read_json
from tuiloop.rundir.state import run_state
from tuiloop.runner.spec_run import run_spec

RECIPE_KEYS = {"model_state_dict", "optimizer_state_dict", "epoch", "loss"}
RESUME_KEYS = {"scheduler_state_dict", "step", "batch_in_epoch", "best", "early_stopping", "rng_state"}


def test_a_finished_run_directory_holds_its_spec_info_log_summary_and_checkpoints(workdir: Path) -> None:
    spec = write_spec(
        workdir,
        run={"name": "layout", "epochs": 3},
        early_stopping={"monitor": "val_acc", "patience": 5},
        checkpoint={"every_n_epochs": 2},
    )
    events: list[Event] = []
    code, run_dir = run_spec(spec, sinks=[events.append])
    assert code == 0 and run_dir is not None
    assert run_dir.parent == workdir / "runs" and run_dir.name.startswith("layout-")
    names = {p.name for p in run_dir.iterdir()}
    assert {"spec.toml", "run.json", "events.jsonl", "summary.json", "checkpoints"} <= names
    assert "control.sock" not in names, "the control socket must go when the run ends"
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"best.pt", "last.pt", "epoch-0002.pt"}
    assert oct(run_dir.stat().st_mode & 0o777) == oct(0o700)

    saved_spec = (run_dir / "spec.toml").read_text()
    assert 'name = "layout"' in saved_spec and "[early_stopping]" in saved_spec

    info = read_json(run_dir / "run.json")
    assert info is not None and info["name"] == "layout" and info["pid"] == os.getpid()
    assert set(info["versions"]) >= {"python", "torch", "tuiloop"}

    summary = read_json(run_dir / "summary.json")
    assert summary is not None
    assert summary["status"] == "completed" and summary["epochs_done"] == 3 and summary["steps"] == 24
    assert summary["monitor"] == "val_acc" and summary["best_value"] is not None and summary["best_epoch"] in (1, 2, 3)
    assert summary["wall_time_s"] > 0 and summary["ended"] >= summary["started"]
    assert summary["versions"]["torch"] == torch.__version__
    assert set(summary["final_metrics"]) == {"train_loss", "val_loss", "val_acc", "val_ppl"}
    assert run_state(run_dir).state == "finished"

    logged, tail = read_events(run_dir)
    assert tail.skipped == 0
    # every event, in order; a foreground run's start-up phases come before its directory exists
    phases = [e.phase for e in events if e.kind == "starting"]
    assert phases[:2] == ["importing torch", "importing the spec's targets"] and "loading the data" in phases
    assert [e.kind for e in logged] == [e.kind for e in events[len(phases) :]], (
        "events.jsonl holds every event, in order"
    )
    assert logged[0].kind == "run_started" and logged[-1].kind == "finished"
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    assert all(json.loads(line)["event"] for line in lines)
    best = [e for e in events if isinstance(e, CheckpointSaved) and e.tag == "best"]
    assert best and best[-1].path == "checkpoints/best.pt" and best[-1].monitor == "val_acc"


def test_checkpoint_loads_weights_only_without_tuiloop(workdir: Path) -> None:
    code, run_dir = run_spec(write_spec(workdir, run={"epochs": 2}, scheduler={"target": "StepLR", "step_size": 1}))
    assert code == 0 and run_dir is not None
    script = (
        "import json, sys, torch\n"
        "out = {}\n"
        "for name in ('best.pt', 'last.pt'):\n"
        "    ck = torch.load(sys.argv[1] + '/' + name, map_location='cpu', weights_only=True)\n"
        "    out[name] = {'keys': sorted(ck), 'model': sorted(ck['model_state_dict']), 'epoch': ck['epoch'], 'loss': ck['loss']}\n"
        "assert not [m for m in sys.modules if m.startswith('tuiloop')], 'tuiloop was imported'\n"
        "print(json.dumps(out))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", script, str(run_dir / "checkpoints")],
        capture_output=True,
        text=True,
        cwd=workdir,
        env=cli_env(),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for name in ("best.pt", "last.pt"):
        assert set(out[name]["keys"]) >= RECIPE_KEYS | RESUME_KEYS
        assert out[name]["model"] == ["net.0.bias", "net.0.weight", "net.2.bias", "net.2.weight"]
        assert isinstance(out[name]["loss"], float)
    assert out["last.pt"]["epoch"] == 2
    # the recipe's way back: a fresh model and optimizer take the saved states
    ck = load_ckpt(run_dir / "checkpoints" / "last.pt")
    model = tiny.MLP(4, 3, 16)
    model.load_state_dict(ck["model_state_dict"])
    opt = torch.optim.Adam(model.parameters())
    opt.load_state_dict(ck["optimizer_state_dict"])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * 0.1**2)
    assert ck["scheduler_state_dict"]["last_epoch"] == 2


class FakeCompiled(nn.Module):
    """What torch.compile returns: the real module under ``_orig_mod``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._orig_mod = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._orig_mod(x)


@pytest.mark.parametrize(
    "wrap",
    [nn.DataParallel, FakeCompiled, lambda m: FakeCompiled(nn.DataParallel(m))],
    ids=["DataParallel", "compiled", "both"],
)
def test_checkpoints_hold_the_unwrapped_model(tmp_path: Path, wrap) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    inner = tiny.MLP()
    model = wrap(inner)
    assert any(k.startswith(("module.", "_orig_mod.")) for k in model.state_dict())
    assert unwrap(model) is inner
    train, val = tiny.classes()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    cpu = torch.device("cpu")
    trainer = Trainer(
        model,
        Batches(train, cpu, 16, True),
        Batches(val, cpu, 16, False),
        nn.CrossEntropyLoss(),
        opt,
        options=Options(epochs=1),
        run_dir=tmp_path,
    )
    assert trainer.run().status == "completed"
    for name in ("best.pt", "last.pt"):
        ck = load_ckpt(tmp_path / "checkpoints" / name)
        assert sorted(ck["model_state_dict"]) == sorted(tiny.MLP().state_dict())
        assert_same_weights(ck["model_state_dict"], inner.state_dict())
    # and a wrapped model resumes from it
    again = wrap(tiny.MLP())
    trainer2 = Trainer(
        again,
        Batches(train, cpu, 16, True),
        Batches(val, cpu, 16, False),
        nn.CrossEntropyLoss(),
        torch.optim.Adam(again.parameters()),
        options=Options(epochs=1),
    )
    trainer2.resume(tmp_path / "checkpoints" / "last.pt")
    assert_same_weights(unwrap(again).state_dict(), inner.state_dict())


def test_checkpoint_survives_sigkill_at_random_moments(tmp_path: Path) -> None:
    """A writer saving 4 MB checkpoints in a loop is SIGKILLed again and again (until at least 5
    kills have landed mid-write and 10 after a completed save): the file is always whole."""
    path = tmp_path / "checkpoints" / "last.pt"
    server = subprocess.Popen(
        [sys.executable, str(FIXTURES / "ckpt_writer.py"), str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    rng = random.Random(1234)
    seen: list[int] = []
    torn_writes = 0
    try:
        for round_ in range(200):  # a slow machine lands fewer kills mid-write: go on until enough have
            if torn_writes >= 5 and len({v // 100_000 for v in seen}) > 10:
                break
            start = round_ * 100_000
            assert server.stdin is not None and server.stdout is not None
            server.stdin.write(f"{start}\n")
            server.stdin.flush()
            pid = int(server.stdout.readline())
            wait_until(path.exists, 30, "the writer's first complete file", every=0.005)  # at once after the first
            time.sleep(rng.uniform(0.0, 0.25))  # a random moment of the writing to kill it at
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda pid=pid: not _alive(pid), 10, "the killed writer to be gone", every=0.002)
            ck = torch.load(path, map_location="cpu", weights_only=True)  # must never raise
            v = ck["version"]
            assert v >= start or (seen and v == seen[-1]), "an older version came back"
            w, b = ck["model_state_dict"]["w"], ck["model_state_dict"]["b"]
            assert w.numel() == 1 << 20 and bool((w == v).all()) and bool((b == v).all()), "a mixed or torn checkpoint"
            assert ck["epoch"] == v and ck["loss"] == float(v)
            seen.append(v)
            torn_writes += bool(list(path.parent.glob(".last.pt.*.tmp")))
            remove_stale_temps(path.parent)
            assert not list(path.parent.glob(".*.tmp"))
    finally:
        server.kill()
        server.wait()
    assert len({v // 100_000 for v in seen}) > 10, f"too few kills after a completed save: {seen}"
    assert torn_writes >= 5, f"only {torn_writes} kills landed during a write; the test did not test much"
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def _alive(pid: int) -> bool:
    """Until the writer is gone and reaped by its parent."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_saved_spec_round_trips_every_valid_toml_spec(workdir: Path) -> None:
    """Non-ASCII keys and strings, dates and times, nested tables, arrays of tables: spec.toml reads back equal."""
    import datetime
    import math

    from tuiloop.spec.load import tomllib

    text = """
[run]
name = "café-run"
epochs = 1
out_dir = "runs"
device = "cpu"

[model]
target = "tiny.py:configured"
"clé" = "valeur ünïcödé ✓"
when = 2026-11-25T09:30:00+01:00
day = 2026-11-25
at = 07:45:00
ratio = inf
[model.nested.deeper]
layers = [1, 2, 3]
[[model.blocks]]
width = 8
[[model.blocks]]
width = 16
kind = "conv"

[data]
target = "tiny.py:classes"
batch_size = 16

[loss]
target = "CrossEntropyLoss"

[optimizer]
target = "Adam"
lr = 0.01
""".replace('out_dir = "runs"', f'out_dir = "{workdir / "runs"}"')  # not the current directory
    (workdir / "spec.toml").write_text(text, encoding="utf-8")
    code, run_dir = run_spec(workdir / "spec.toml")
    assert code == 0
    saved = tomllib.loads((run_dir / "spec.toml").read_text(encoding="utf-8"))
    original = tomllib.loads(text)
    assert saved == original
    assert saved["model"]["when"] == datetime.datetime(
        2026, 11, 25, 9, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=1))
    )
    assert saved["model"]["blocks"][1] == {"width": 16, "kind": "conv"} and math.isinf(saved["model"]["ratio"])
