"""Plain lines (a headless run, ``show | cat``) and the monitor's log say the same sentences."""

from __future__ import annotations

import io
import re

import pytest

from tuiloop.engine.events import (
    EVENT_TYPES,
    CheckpointSaved,
    EarlyStopUpdate,
    Event,
    EventReader,
    Failed,
    Finished,
    LRChanged,
    Message,
    RunStarted,
    SettingChanged,
    Stalled,
    StateChanged,
    TrainSteps,
    Validated,
    event_from_dict,
    on,
)
from tuiloop.engine.plain import PlainSink
from tuiloop.rundir.digest import DigestLoaded
from tuiloop.tui.model import MonitorModel

T0 = 1_700_000_000.0


def started(**kw: object) -> RunStarted:
    base: dict = dict(run_name="tiny", run_dir="/runs/tiny-1", device="cpu", device_name="cpu", epochs=3, steps_per_epoch=8,
                      batch_size=16, train_size=120, val_size=40, problem="multiclass", metrics=["train_loss", "val_loss"],
                      monitor="val_loss", mode="min", patience=3, num_params=99, time=T0)  # fmt: skip
    base.update(kw)
    return RunStarted(**base)


def epoch(n: int, val: float, best: bool, counter: int = 0, t: float = T0) -> list[Event]:
    step = n * 8
    return [
        TrainSteps(n, step - 7, [0.5] * 8, 8, 0.01, 100.0, time=t),
        Validated(n, step, {"train_loss": 0.5, "val_loss": val}, best, 0.1, time=t + 1),
        EarlyStopUpdate(n, "val_loss", val, 0.2, counter, 3, counter >= 3, time=t + 1),
        *([CheckpointSaved("best", "checkpoints/best.pt", n, step, val, "val_loss", time=t + 2)] if best else []),
        CheckpointSaved("last", "checkpoints/last.pt", n, step, val, "val_loss", time=t + 2),
    ]


def both(events: list[Event]) -> tuple[list[str], list[str]]:
    """The plain lines and the monitor's log entries for ``events``."""
    out = io.StringIO()
    sink = PlainSink(out)
    model = MonitorModel()
    for ev in events:
        sink(ev)
        model.apply(ev)
    sink.close()
    return out.getvalue().splitlines(), [e.text for e in model.log]


def test_every_sentence_of_the_monitors_log_is_a_plain_line_too() -> None:
    events = [
        started(),
        *epoch(1, 0.4, True, t=T0 + 10),
        LRChanged(2, 8, 0.001, 0.01, time=T0 + 12),
        SettingChanged("optimizer.lr", 0.001, 0.0005, 2, 9, "command lr_down", time=T0 + 13),
        SettingChanged("stop_after_epoch", False, True, 2, 10, "key a", time=T0 + 14),
        SettingChanged("run.epochs", 3, 5, 2, 10, "resume --set", time=T0 + 14),
        StateChanged("paused", step=11, time=T0 + 15),
        StateChanged("running", step=11, time=T0 + 16),
        Stalled(
            301.5, 300.0, 11, "data.py:41 in __getitem__", ['  File "data.py", line 41', "    read()"], time=T0 + 16
        ),
        StateChanged("running", "moving again after 5:12", step=11, time=T0 + 16),
        CheckpointSaved("manual", "checkpoints/manual-step0000012.pt", 2, 12, None, "val_loss", time=T0 + 17),
        StateChanged("stopping", "stopped by request", step=12, time=T0 + 18),
        Message("warning", "a DataLoader worker ended with the interrupt", time=T0 + 19),
        Failed("ValueError: bad batch", "training, epoch 2, step 12", "Traceback ...", time=T0 + 20),
        Finished("failed", "ValueError: bad batch", 1, 12, 0.4, 1, "val_loss", 20.0, time=T0 + 21),
    ]
    plain, logged = both(events)
    assert len(logged) == 15
    for text in logged:  # each of the monitor's sentences, as a plain line (with its frame)
        assert any(text in line or text.removesuffix(")") in line for line in plain), (text, plain)
    assert "saved best checkpoints/best.pt  epoch 1  val_loss 0.4000 + last.pt" in plain
    assert "learning rate 0.01 -> 0.001 (epoch 2)" in plain
    assert "error: ValueError: bad batch  [training, epoch 2, step 12]" in plain
    assert "stalled: no step for 5:02 (stalled after 5:00), at step 11: data.py:41 in __getitem__" in logged
    assert plain[plain.index(next(p for p in plain if p.startswith("stalled:"))) + 1] == '    File "data.py", line 41'
    assert any(p.startswith("state: running again at step 11 (moving again after 5:12)") for p in plain), plain
    assert (
        plain[-1]
        == "finished: failed (ValueError: bad batch) after 1 epoch, 12 steps in 20.0s, best val_loss 0.4000 at epoch 1"
    )
    # what a person did ends with the time it happened
    clock = r", \d\d:\d\d:\d\d\)?$"
    for start in ("learning rate 0.001 -> 0.0005", "stops after epoch 2", "run.epochs: 3 -> 5", "state: paused at step 11",
                  "state: resumed at step 11", "saved manual", "state: stopping at step 12 (stopped by request)"):  # fmt: skip
        assert any(line.startswith(start) and re.search(clock, line) for line in plain), (start, plain)


@pytest.mark.parametrize("best", [True, False])
def test_a_last_save_joins_the_best_save_of_its_step_or_stands_alone(best: bool) -> None:
    plain, logged = both(
        [started(), *epoch(1, 0.4, True), *epoch(2, 0.5 if not best else 0.3, best, counter=int(not best))]
    )
    saves = [line for line in plain if line.startswith("saved ")]
    assert saves == [e for e in logged if e.startswith("saved ")]
    assert saves[0] == "saved best checkpoints/best.pt  epoch 1  val_loss 0.4000 + last.pt"
    second = (
        "saved best checkpoints/best.pt  epoch 2  val_loss 0.3000 + last.pt"
        if best
        else "saved last checkpoints/last.pt  epoch 2  val_loss 0.5000"
    )
    assert saves[1] == second
    # the early-stopping counter still rides on its epoch line, which comes first
    assert plain.index(next(line for line in plain if line.startswith("epoch 2/3"))) < plain.index(second)
    assert all("patience " in line for line in plain if line.startswith("epoch "))


def test_a_periodic_save_takes_the_last_save_and_the_best_keeps_its_own_line() -> None:
    step = 8
    saves = [CheckpointSaved(tag, f"checkpoints/{name}", 1, step, 0.4, "val_loss", time=T0 + 1)
             for tag, name in (("best", "best.pt"), ("periodic", "epoch-0001.pt"), ("last", "last.pt"))]  # fmt: skip
    plain, logged = both([started(), *saves])
    assert (
        [line for line in plain if line.startswith("saved ")]
        == [
            "saved best checkpoints/best.pt  epoch 1  val_loss 0.4000",
            "saved periodic checkpoints/epoch-0001.pt  epoch 1  val_loss 0.4000 + last.pt",
        ]
        == [t for t in logged if t.startswith("saved ")]
    )


def test_a_resumed_start_says_where_from_in_both_views() -> None:
    ev = started(start_epoch=2, start_step=16, resumed_from="checkpoints/last.pt")
    plain, logged = both([ev])
    assert logged == [
        "resumed at epoch 3, step 16 from checkpoints/last.pt: multiclass on cpu, 99 parameters, 3 epochs of 8 steps"
    ]
    assert plain[0] == f"run tiny {logged[0]}"


def test_every_logged_event_type_is_registered_by_its_kind_and_round_trips() -> None:
    assert (
        set(EVENT_TYPES) == {cls.kind for cls in EVENT_TYPES.values()} and len(EVENT_TYPES) == 15
    )  # tested: the test split at the end
    assert "digest_loaded" not in EVENT_TYPES  # a reader's stand-in, never in the log
    ev = epoch(1, 0.4, True)[1]
    assert event_from_dict(ev.to_dict()) == ev


def test_a_reader_takes_each_type_by_its_handler_and_a_subclass_may_override_one() -> None:
    class Counter(EventReader):
        def __init__(self) -> None:
            self.seen: list[str] = []

        @on(TrainSteps, Validated)
        def _progress(self, ev: Event) -> None:
            self.seen.append("progress")

        @on(Finished)
        def _finished(self, ev: Finished) -> None:
            self.seen.append("finished")

    class Louder(Counter):
        def _finished(self, ev: Finished) -> None:
            self.seen.append("FINISHED")

    events = epoch(1, 0.4, True) + [Finished("completed", "1 epoch done", 1, 8, None, None, None, 1.0)]
    for reader, last in ((Counter(), "finished"), (Louder(), "FINISHED")):
        taken = [reader.dispatch(ev) for ev in events]
        assert taken == [True, True, False, False, False, True]
        assert reader.seen == ["progress", "progress", last]
    assert DigestLoaded in MonitorModel.handlers  # a type outside the log is read the same way
