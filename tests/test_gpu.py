"""The CUDA path on a real GPU (the ``gpu`` marker; skipped without CUDA).

Run them where a GPU is: ``python -m pytest -m gpu``. They cover a run on CUDA, a stop and an exact
resume there, the three precisions (16-mixed's grad scaler state in checkpoints, a skipped
step that is not a failure), torch.compile, no host sync in steady-state steps, and pinned
memory with non_blocking copies.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import tiny
import torch
from conftest import load_ckpt, write_spec

from tuiloop.engine import batches as batches_module
from tuiloop.engine.batches import Batches
from tuiloop.engine.events import Event, Failed, Finished, TrainSteps, Validated
from tuiloop.runner.build import build_trainer
from tuiloop.runner.spec_run import run_spec
from tuiloop.spec import load_spec, resolve

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def train(workdir: Path, *sets: str, **sections: Any) -> tuple[int, list[Event], Path]:
    events: list[Event] = []
    code, run_dir = run_spec(write_spec(workdir, **sections), ["run.device=cuda", *sets], sinks=[events.append])
    return code, events, run_dir


def of(events: list[Event], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def make(workdir: Path, tag: str, *sets: str, **sections: Any):  # type: ignore[no-untyped-def]
    trainer = build_trainer(resolve(load_spec(write_spec(workdir, **sections), ["run.device=cuda", *sets])))
    trainer.run_dir = workdir / tag
    (trainer.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    return trainer


def test_a_run_on_cuda_learns_and_its_checkpoint_loads_on_cuda_and_cpu(workdir: Path) -> None:
    code, events, run_dir = train(workdir, "run.epochs=3", "optimizer.lr=0.05")
    assert code == 0, of(events, Failed)
    (started,) = [e for e in events if e.kind == "run_started"]
    assert started.device.startswith("cuda") and "cuda:" in started.device_name
    vals = [v.metrics["val_loss"] for v in of(events, Validated)]
    assert vals[-1] < vals[0]
    ck = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)  # on a GPU box, loads as saved
    assert all(t.is_cuda for t in ck["model_state_dict"].values())
    model = tiny.MLP()
    model.load_state_dict(load_ckpt(run_dir / "checkpoints" / "best.pt")["model_state_dict"])  # and on the CPU


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_a_stop_and_a_resume_on_cuda(workdir: Path, precision: str) -> None:
    """Resume on CUDA works (the RNG states stay CPU tensors) and continues where the stop left it."""
    sets = ("run.epochs=3", "run.log_interval=1e-9", f"train.precision={precision}", "train.gradient_clip_val=1.0")
    ref = make(workdir, "ref", *sets, model={"dropout": 0.3})
    assert ref.run().status == "completed"
    first = make(workdir, "cut", *sets, model={"dropout": 0.3})
    first.subscribe(
        lambda e: (
            first.commands.send("stop")
            if isinstance(e, TrainSteps) and e.first_step + len(e.losses) - 1 == 11
            else None
        )
    )
    assert first.run().status == "stopped"
    ck = load_ckpt(workdir / "cut" / "checkpoints" / "last.pt")
    assert ck["step"] == 11
    scaler_state = ck["scaler_state_dict"] or {}  # a GradScaler's: 16-mixed alone scales the loss
    assert (scaler_state.get("scale", 0) > 0) == (precision == "16-mixed"), scaler_state
    second = make(workdir, "cut", *sets, model={"dropout": 0.3})
    second.resume(workdir / "cut" / "checkpoints" / "last.pt")
    scaler = second.precision.scaler
    assert (scaler and scaler.get_scale()) == scaler_state.get("scale"), "the resumed run scales as the stopped one"
    assert second.run().status == "completed"
    for key, value in ref.model.state_dict().items():
        torch.testing.assert_close(second.model.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_16_mixed_reports_the_loss_scale_and_a_skipped_step_is_not_a_failure(workdir: Path) -> None:
    code, events, _ = train(
        workdir, "run.epochs=2", "train.precision=16-mixed", model={"target": "tiny.py:Overflow", "at": 5}
    )
    assert code == 0, of(events, Failed)
    steps = of(events, TrainSteps)
    assert sum(e.skipped_steps for e in steps) >= 1
    assert all(e.loss_scale and e.loss_scale > 0 for e in steps)
    assert of(events, Finished)[0].status == "completed"
    assert all(
        v.metrics["train_loss"] == v.metrics["train_loss"] and v.metrics["train_loss"] < 1e3
        for v in of(events, Validated)
    ), "skipped steps stay out of the epoch's mean"


def test_bf16_mixed_runs_the_forward_in_bfloat16(workdir: Path) -> None:
    trainer = make(workdir, "bf16", "run.epochs=1", "train.precision=bf16-mixed")
    seen: list[torch.dtype] = []
    trainer.model.net[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    assert trainer.run().status == "completed" and set(seen) == {torch.bfloat16}


def test_compile_on_cuda_trains_and_saves_plain_keys(workdir: Path) -> None:
    code, events, run_dir = train(workdir, "run.epochs=2", "train.compile=true", "data.drop_last=true")
    assert code == 0, of(events, Failed)
    assert not any("_orig_mod" in k for k in load_ckpt(run_dir / "checkpoints" / "last.pt")["model_state_dict"])


@pytest.mark.parametrize(
    ("precision", "clip"),
    [("32-true", 0.0), ("bf16-mixed", 0.0), ("32-true", 1.0), ("bf16-mixed", 1.0)],
    ids=["32-true", "bf16-mixed", "32-true-clip", "bf16-mixed-clip"],
)
def test_steady_state_steps_do_not_sync_with_the_host(workdir: Path, precision: str, clip: float) -> None:
    """Between flushes a step makes no host sync: with flushes only at the ends of epochs, the
    second epoch's 60 steps make as few syncs as the flush itself (torch's sync debug mode counts).
    Clipping neither: the total norm stays on the device, read with the losses at the flush."""
    sets = (
        "run.epochs=2",
        "run.log_interval=1e9",
        f"train.precision={precision}",
        f"train.gradient_clip_val={clip}",
        "checkpoint.best=false",
        "checkpoint.last=false",
    )  # a save copies to the host
    trainer = make(workdir, "sync", *sets, data={"n": 1000, "n_val": 40})
    assert trainer.steps_per_epoch() == 60
    window: dict[str, Any] = {}

    def sink(e: Event) -> None:
        if isinstance(e, Validated) and e.epoch == 1:  # the second epoch starts after this
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")
            window["on"] = True
        elif isinstance(e, TrainSteps) and e.epoch == 2 and window.get("on"):
            torch.cuda.set_sync_debug_mode(0)
            window["on"] = False

    trainer.subscribe(sink)
    trainer_events: list[Event] = []
    trainer.subscribe(trainer_events.append)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert trainer.run().status == "completed"
    torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= 4, [str(w.message)[:200] for w in syncs]
    # with clipping the norms were measured, and reported with the losses of the same flush; without, not measured
    steps = [e for e in of(trainer_events, TrainSteps) if e.epoch == 2]
    assert steps and all((e.grad_norms is not None and len(e.grad_norms) == len(e.losses)) == (clip > 0) for e in steps)


def test_pinned_non_blocking_chunks_give_the_batches_of_the_cached_path(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dataset too big to cache on the GPU is copied in pinned chunks, non_blocking: the batches
    equal those of the cached path, and a DataLoader pins its batches on CUDA."""
    cuda = torch.device("cuda")
    train_set, _ = tiny.classes(n=400, n_val=40)
    cached = [tuple(t.cpu() for t in b) for b in Batches(train_set, cuda, 16, shuffle=True, seed=3).epoch(1)]
    monkeypatch.setattr(batches_module, "DEVICE_CACHE_BYTES", 0)
    chunked = Batches(train_set, cuda, 16, shuffle=True, seed=3)
    assert chunked.non_blocking and not chunked._cached
    streamed = [tuple(t.cpu() for t in b) for b in chunked.epoch(1)]
    assert len(streamed) == len(cached)
    for a, b in zip(streamed, cached, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    loader = Batches(tiny.noisy_classes()[0], cuda, 16, shuffle=True, num_workers=0)
    assert loader.non_blocking and loader._loader.pin_memory
    x, y = next(iter(loader.epoch(0)))
    assert x.is_cuda and y.is_cuda


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_with_nccl_report_what_one_process_would(workdir: Path) -> None:
    """``--nproc-per-node 2`` on a box with two GPUs: one process per GPU, NCCL, rank 0's metrics
    equal to one process's on the same weights."""
    from conftest import only_run, run_cli
    from runs_support import events, summary

    done = run_cli(
        "run",
        write_spec(workdir, run={"epochs": 3, "device": "auto"}),
        "--headless",
        "--nproc-per-node",
        "2",
        cwd=workdir,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    run_dir = only_run(workdir / "runs")
    (started,) = [e for e in events(run_dir) if e["event"] == "run_started"]
    assert (started["world_size"], started["backend"]) == (2, "nccl") and started["device"].startswith("cuda")
    model = tiny.MLP()
    model.load_state_dict(load_ckpt(run_dir / "checkpoints" / "last.pt")["model_state_dict"])
    x, y = tiny.classes()[1].tensors
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(x), y).item()
    val = [e for e in events(run_dir) if e["event"] == "validated"][-1]["metrics"]["val_loss"]
    assert val == pytest.approx(loss, rel=1e-4) and summary(run_dir)["status"] == "completed"


def test_system_samples_on_cuda(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampler on a real GPU: one entry per visible device from NVML, and torch's peak memory."""
    from tuiloop.engine.events import SystemSample
    from tuiloop.rundir.eventlog import read_events
    from tuiloop.runner.system import INTERVAL_ENV

    monkeypatch.setenv(INTERVAL_ENV, "0.05")
    code, events, run_dir = train(workdir, "run.epochs=30")
    assert code == 0, of(events, Failed)
    samples = of(read_events(run_dir)[0], SystemSample)
    assert samples, "no system_sample in events.jsonl"
    last = samples[-1]
    assert len(last.gpus) == torch.cuda.device_count()
    for gpu in last.gpus:
        assert gpu["mem_total"] > 0 and gpu["mem_used"] > 0 and gpu["name"] and 0 <= gpu["util"] <= 100
    assert any((s.torch_peak_bytes or 0) > 0 for s in samples)
    assert last.torch_peak_bytes <= max(g["mem_used"] for g in last.gpus)
