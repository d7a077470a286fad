"""The GPU-grade loop on the CPU: gradient accumulation, clipping and the gradient norm, mixed
precision, torch.compile, and models that compute their own loss."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tiny
import torch
from conftest import assert_same_weights, cli_env, load_ckpt, write_spec
from torch import nn

from tuiloop.engine.batches import Batches
from tuiloop.engine.events import Event, Failed, Finished, Message, SettingChanged, Starting, TrainSteps, Validated
from tuiloop.engine.trainer import Options, Trainer
from tuiloop.runner.build import build_trainer
from tuiloop.runner.spec_run import run_spec
from tuiloop.spec import load_spec, resolve

CPU = torch.device("cpu")


def train(workdir: Path, *sets: str, **sections: Any) -> tuple[int, list[Event], Path]:
    events: list[Event] = []
    code, run_dir = run_spec(write_spec(workdir, **sections), list(sets), sinks=[events.append])
    return code, events, run_dir


def of(events: list[Event], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_ckpt(run_dir / "checkpoints" / "last.pt")["model_state_dict"]


# ---- accumulation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [160, 156], ids=["even groups", "a short last batch"])
def test_accumulating_4_batches_of_8_is_one_batch_of_32(workdir: Path, n: int) -> None:
    """SGD, no batch-dependent layers, the same data order: the same weights up to float rounding,
    with the same optimizer steps (and a last, shorter group stepped, not dropped)."""
    common = dict(
        optimizer={"target": "SGD", "lr": 0.1},
        data={"n": n},
        scheduler={"target": "StepLR", "step_size": 1, "gamma": 0.97, "interval": "step"},
    )
    code, big_events, big = train(
        workdir, "run.epochs=3", f"run.out_dir={workdir / 'big'}", "data.batch_size=32", **common
    )
    assert code == 0
    code, acc_events, acc = train(
        workdir,
        "run.epochs=3",
        f"run.out_dir={workdir / 'acc'}",
        "data.batch_size=8",
        "train.accumulate_grad_batches=4",
        **common,
    )
    assert code == 0
    a, b = weights(big), weights(acc)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)
    f_big, f_acc = of(big_events, Finished)[0], of(acc_events, Finished)[0]
    assert f_acc.step == f_big.step == 3 * 4, "steps count optimizer steps"
    assert load_ckpt(acc / "checkpoints" / "last.pt")["scheduler_state_dict"]["last_epoch"] == 12
    big_losses = [x for e in of(big_events, TrainSteps) for x in e.losses]
    acc_losses = [x for e in of(acc_events, TrainSteps) for x in e.losses]
    assert acc_losses == pytest.approx(big_losses, rel=1e-5), "a step's loss is its group's mean loss"
    (started,) = [e for e in acc_events if e.kind == "run_started"]
    assert (started.steps_per_epoch, started.accumulate_grad_batches) == (4, 4)


def _make(workdir: Path, tag: str, *sets: str, **sections: Any) -> Trainer:
    trainer = build_trainer(resolve(load_spec(write_spec(workdir, **sections), list(sets))))
    trainer.run_dir = workdir / tag
    (trainer.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    return trainer


def test_stop_after_epoch_and_go_on_each_sent_twice_do_what_once_does(workdir: Path) -> None:
    """A command retried (its first answer timed out on a frozen run) changes nothing: e twice
    still stops after the epoch, and go_on twice still goes on (they were one toggle before)."""
    for sends, stops in ((["stop_after_epoch"] * 2, True), (["stop_after_epoch", "go_on", "go_on"], False)):
        trainer = _make(workdir, f"twice-{len(sends)}", "run.epochs=3")
        seen: list[Event] = []
        trainer.subscribe(seen.append)

        def send_in_epoch_2(module: nn.Module, args: Any, trainer: Trainer = trainer, sends: list = sends) -> None:
            if module.training and trainer.epoch == 1 and sends:
                trainer.commands.send(sends.pop(0))

        trainer.model.register_forward_pre_hook(send_in_epoch_2)
        finished = trainer.run()
        assert (finished.status, finished.epochs_done) == (("stopped", 2) if stops else ("completed", 3))
        changes = [(e.old, e.new) for e in of(seen, SettingChanged) if e.key == "stop_after_epoch"]
        assert changes == ([(False, True)] if stops else [(False, True), (True, False)])


@pytest.mark.parametrize("val_every", [1, 3])
def test_stop_after_this_epoch_validates_saves_once_and_stops(workdir: Path, val_every: int) -> None:
    """The `e` key in epoch 2 of a run that validates every 3rd epoch: epoch 2 still ends with its
    validation, checkpoints and early-stopping update, last.pt is written once, the run stops."""
    trainer = _make(
        workdir, f"e{val_every}", "run.epochs=9", f"run.val_every={val_every}", early_stopping={"patience": 5}
    )
    seen: list[Event] = []
    trainer.subscribe(seen.append)
    sent = []

    def press_e_in_epoch_2(module: nn.Module, args: Any) -> None:
        if module.training and trainer.epoch == 1 and not sent:
            sent.append(trainer.commands.send("stop_after_epoch"))

    trainer.model.register_forward_pre_hook(press_e_in_epoch_2)
    finished = trainer.run()
    assert (finished.status, finished.epochs_done, finished.reason) == ("stopped", 2, "stopped after epoch 2, as asked")
    assert [v.epoch for v in of(seen, Validated)] == ([1, 2] if val_every == 1 else [2])
    assert [e.epoch for e in seen if type(e).__name__ == "EarlyStopUpdate"][-1] == 2
    lasts = [e for e in seen if type(e).__name__ == "CheckpointSaved" and e.tag == "last"]
    assert [e.step for e in lasts][-1] == finished.step and len([e for e in lasts if e.step == finished.step]) == 1, (
        "last.pt once at the end"
    )
    assert load_ckpt(workdir / f"e{val_every}" / "checkpoints" / "last.pt")["epoch"] == 2


def test_a_stop_in_the_middle_of_a_group_resumes_exactly(workdir: Path) -> None:
    """The stop arrives after the 5th micro-batch of groups of 3: the run stops at the group's end
    (batch 6, step 2), and the resumed run ends bitwise where the uninterrupted one did."""
    sets = ("run.epochs=3", "train.accumulate_grad_batches=3", "train.gradient_clip_val=0.5")
    sections = dict(model={"dropout": 0.3}, data={"batch_size": 8})
    ref = _make(workdir, "ref", *sets, **sections)
    assert ref.run().status == "completed"

    first = _make(workdir, "cut", *sets, **sections)
    calls = {"n": 0}

    def count_forwards(module: nn.Module, args: Any) -> None:
        if module.training:
            calls["n"] += 1
            if calls["n"] == 5:
                first.commands.send("stop")

    hook = first.model.register_forward_pre_hook(count_forwards)
    stopped = first.run()
    hook.remove()
    ck = load_ckpt(workdir / "cut" / "checkpoints" / "last.pt")
    assert (stopped.status, stopped.step, ck["step"], ck["batch_in_epoch"]) == ("stopped", 2, 2, 6)

    second = _make(workdir, "cut", *sets, **sections)
    second.resume(workdir / "cut" / "checkpoints" / "last.pt")
    resumed = second.run()
    assert (resumed.status, resumed.step) == ("completed", ref.step)
    assert_same_weights(second.model.state_dict(), ref.model.state_dict())
    assert_same_weights(second.optimizer.state_dict()["state"][0], ref.optimizer.state_dict()["state"][0])


# ---- clipping and the gradient norm -----------------------------------------------------------------
def _hand_loop(clip: str | None, max_value: float, steps: int) -> tuple[dict[str, torch.Tensor], list[float]]:
    """The same training by hand: unshuffled batches of 16, Adam, clipping with torch's utilities."""
    torch.manual_seed(0)
    model = tiny.MLP(4, 3, 16)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = tiny.classes()[0].tensors
    norms = []
    for i in range(steps):
        lo = (i % 8) * 16
        opt.zero_grad()
        nn.CrossEntropyLoss()(model(x[lo : lo + 16]), y[lo : lo + 16]).backward()
        params = list(model.parameters())
        if clip == "norm":
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, max_value)))
        else:
            norms.append(float(torch.nn.utils.get_total_norm([p.grad for p in params])))
            if clip == "value":
                torch.nn.utils.clip_grad_value_(params, max_value)
        opt.step()
    return model.state_dict(), norms


@pytest.mark.parametrize("clip", ["norm", "value", None])
def test_clipping_matches_torchs_utilities_and_logs_the_norm_before_it(workdir: Path, clip: str | None) -> None:
    sets = ["run.epochs=2", "data.shuffle=false", "optimizer.lr=0.05", "run.log_interval=1e-9"]
    if clip:
        sets += ["train.gradient_clip_val=0.2", f"train.gradient_clip_algorithm={clip}"]
    else:
        sets += ["train.log_grad_norm=true"]
    code, events, run_dir = train(workdir, *sets)
    assert code == 0
    want, hand_norms = _hand_loop(clip, 0.2, 16)
    assert_same_weights(weights(run_dir), want)
    logged = [g for e in of(events, TrainSteps) for g in e.grad_norms]
    assert logged == pytest.approx(hand_norms, rel=1e-6)


def test_without_clipping_the_norm_is_not_measured_by_default(workdir: Path) -> None:
    code, events, _ = train(workdir, "run.epochs=1")
    assert code == 0 and all(e.grad_norms is None for e in of(events, TrainSteps))


# ---- precision --------------------------------------------------------------------------------------------
def test_bf16_mixed_trains_under_autocast_on_the_cpu(workdir: Path) -> None:
    seen: list[torch.dtype] = []

    code, events, run_dir = train(workdir, "run.epochs=3", "train.precision=bf16-mixed", "optimizer.lr=0.05")
    assert code == 0
    vals = [v.metrics["val_loss"] for v in of(events, Validated)]
    assert vals[-1] < vals[0], "it learns"
    assert load_ckpt(run_dir / "checkpoints" / "last.pt")["model_state_dict"]["net.0.weight"].dtype == torch.float32, (
        "weights stay float32"
    )
    (started,) = [e for e in events if e.kind == "run_started"]
    assert started.precision == "bf16-mixed"
    # and the forward really ran in bfloat16
    trainer = _make(workdir, "probe", "run.epochs=1", "train.precision=bf16-mixed")
    trainer.model.net[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    assert trainer.run().status == "completed"
    assert set(seen) == {torch.bfloat16}


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (
            "fp16",
            [
                "[train] precision",
                "'fp16' is not one of '32-true', 'bf16-mixed', '16-mixed'",
                'Did you mean "16-mixed"?',
            ],
        ),
        ("bf16", ['Did you mean "bf16-mixed"?']),
        (
            "16-mixed",
            ["[train] precision", '"16-mixed" (float16 with loss scaling) needs a GPU; on the CPU use "bf16-mixed"'],
        ),
    ],
)
def test_bad_precisions_say_what_to_use(
    workdir: Path, capsys: pytest.CaptureFixture[str], value: str, said: list[str]
) -> None:
    from tuiloop.cli import main

    assert main(["run", str(write_spec(workdir)), "--headless", "--set", f"train.precision={value}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tuiloop: error: ") and err.count("\n") == 1 and "Traceback" not in err
    for part in said:
        assert part in err, err


# ---- models that compute their own loss --------------------------------------------------------------------
def test_the_own_loss_list_fixture_returns_a_list_not_a_tuple() -> None:
    """What the "list" case below relies on: its model's output is a list (logits, the scalar loss)."""
    with torch.no_grad():
        out = tiny.OwnLossList()(*tiny.classes()[1].tensors)
    assert isinstance(out, list) and [t.ndim for t in out] == [2, 0]


@pytest.mark.parametrize(
    ("model", "style"),
    [("OwnLoss", "tuple"), ("OwnLossList", "tuple"), ("OwnLoss", "scalar"), ("OwnLoss", "attr"), ("OwnLoss", "dict")],
    ids=["tuple", "list", "scalar", "attr", "dict"],
)
def test_a_model_that_computes_its_own_loss_from_a_tuple_batch(workdir: Path, model: str, style: str) -> None:
    """nanoGPT's convention: the batch (x, y) goes to forward as model(x, y); the loss is the
    output, output.loss, output["loss"], or the one scalar tensor of a tuple or a list."""
    code, events, run_dir = train(
        workdir,
        "run.epochs=4",
        "optimizer.lr=0.05",
        model={"target": f"tiny.py:{model}", "style": style},
        loss={"target": "model"},
    )
    assert code == 0, of(events, Failed)
    vals = [v.metrics for v in of(events, Validated)]
    assert set(vals[0]) == {"train_loss", "val_loss", "val_ppl"} and vals[-1]["val_loss"] < vals[0]["val_loss"]
    assert vals[-1]["val_ppl"] == pytest.approx(math.exp(vals[-1]["val_loss"]))  # a cross-entropy: its perplexity
    # val_loss is the model's own loss on the validation split, as a hand computation gives it
    net = tiny.OwnLoss(style)
    net.load_state_dict(weights(run_dir))
    x, y = tiny.classes()[1].tensors
    with torch.no_grad():
        hand = nn.functional.cross_entropy(net.net(x), y).item()
    assert vals[-1]["val_loss"] == pytest.approx(hand, rel=1e-5)
    said = [m.text for m in of(events, Message) if m.level == "info"]
    assert "a model that computes its own loss (the model's own loss); metrics: train_loss, val_loss, val_ppl" in said


def test_a_hugging_face_style_dict_batch_goes_to_forward_by_name(workdir: Path) -> None:
    """The batch {"x": ..., "labels": ...} goes to forward as model(**batch); early stopping and
    ReduceLROnPlateau work on its val_loss like on any metric."""
    sections = dict(
        model={"target": "tiny.py:OwnLoss", "style": "attr"},
        data={"target": "tiny.py:labelled_dicts"},
        loss={"target": "model"},
        scheduler={
            "target": "ReduceLROnPlateau",
            "patience": 0,
            "factor": 0.5,
            "threshold": 10.0,
            "threshold_mode": "abs",
        },  # every check after the first is "bad"
        early_stopping={"monitor": "val_loss", "patience": 2, "min_delta": 1.0},
    )
    code, events, run_dir = train(workdir, "run.epochs=20", "optimizer.lr=0.05", **sections)
    assert code == 0, of(events, Failed)
    f = of(events, Finished)[0]
    assert (f.status, f.epochs_done, f.monitor) == ("early_stopped", 3, "val_loss")
    assert [e.lr for e in events if e.kind == "lr_changed"] == [0.025, 0.0125]
    assert (run_dir / "checkpoints" / "best.pt").is_file()


def test_a_model_that_returns_no_loss_is_a_clear_error(workdir: Path) -> None:
    code, events, _ = train(workdir, model={"target": "tiny.py:OwnLoss", "style": "bad"}, loss={"target": "model"})
    assert code == 1
    (failed,) = of(events, Failed)
    assert (
        '[loss] target = "model" takes the loss from what the model returns, but it returned a tensor of shape (16, 3)'
        in failed.error
    )
    assert "as output.loss" in failed.error and "first batch" in failed.where


def test_the_loss_section_of_a_model_loss_takes_no_keys(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tuiloop.cli import main

    spec = write_spec(workdir, model={"target": "tiny.py:OwnLoss"}, loss={"target": "model", "reduction": "sum"})
    assert main(["run", str(spec), "--headless"]) == 2
    assert "[loss] reduction" in capsys.readouterr().err


# ---- torch.compile ---------------------------------------------------------------------------------------------
@pytest.mark.slow  # the first compile on a machine costs ~30 s
def test_compile_announces_the_first_step_counts_recompiles_and_saves_plain_keys(workdir: Path) -> None:
    """One compiled run (the first compile costs ~30 s here): 120 samples in batches of 16 end with a batch of 8."""
    code, events, run_dir = train(workdir, "run.epochs=2", "train.compile=true")
    assert code == 0, of(events, Failed)
    kinds = [e.kind for e in events]
    first_steps = kinds.index("train_steps")
    compiling = [e for e in events[:first_steps] if isinstance(e, Starting) and "torch.compile" in e.phase]
    assert compiling, "the slow first step is announced before it"
    warnings = [m.text for m in of(events, Message) if m.level == "warning"]
    assert any("torch.compile compiled the model again" in w and "drop_last = true" in w for w in warnings), warnings
    keys = list(weights(run_dir))
    assert keys == list(tiny.MLP().state_dict()) and not any("_orig_mod" in k for k in keys)
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    tiny.MLP().load_state_dict(best["model_state_dict"])  # loads into the plain model


def test_compile_without_a_c_compiler_is_a_clear_error_at_the_start(workdir: Path) -> None:
    env = {**cli_env(), "PATH": str(workdir / "empty"), "CXX": "", "CC": ""}
    spec = write_spec(workdir, train={"compile": True})
    done = subprocess.run(
        [sys.executable, "-m", "tuiloop", "run", str(spec), "--headless"],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert (
        "[train] compile: compile = true needs a C++ compiler for torch.compile on cpu, and none was found"
        in done.stderr
    )
    assert "apt install g++" in done.stderr and "Traceback" not in done.stderr
    assert not (workdir / "runs").exists()


def test_the_engine_api_accepts_the_training_options() -> None:
    """From Python: Options carries [train]; the loss can be the string "model"."""
    torch.manual_seed(0)
    train_set, val_set = tiny.classes()
    model = tiny.OwnLoss("tuple")
    trainer = Trainer(
        model,
        Batches(train_set, CPU, batch_size=8, shuffle=True),
        Batches(val_set, CPU, batch_size=40, shuffle=False),
        "model",
        torch.optim.AdamW(model.parameters(), lr=0.01),
        options=Options(epochs=2, accumulate_grad_batches=2, gradient_clip_val=1.0, precision="bf16-mixed"),
    )
    norms: list[float] = []
    trainer.subscribe(lambda e: norms.extend(e.grad_norms or []) if isinstance(e, TrainSteps) else None)
    f = trainer.run()
    assert (f.status, f.step) == ("completed", 2 * 8) and len(norms) == 16 and all(g > 0 for g in norms)
