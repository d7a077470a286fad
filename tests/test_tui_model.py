"""The monitor's view model, series and text panels, without Textual: fed by engine events."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from tuiloop.engine import fmt
from tuiloop.engine.events import (
    CheckpointSaved,
    EarlyStopUpdate,
    Failed,
    Finished,
    LRChanged,
    Message,
    RunStarted,
    StateChanged,
    TrainSteps,
    Validated,
)
from tuiloop.rundir.series import Downsampled, ema, reduce_to
from tuiloop.tui.figures import loss_figure, lr_figure
from tuiloop.tui.model import MonitorModel
from tuiloop.tui.panels.bars import keys_text, progress_text, title_text
from tuiloop.tui.panels.fit import sparkline
from tuiloop.tui.panels.log import error_text
from tuiloop.tui.panels.training import early_stop_text, health_text, lr_text, metrics_text
from tuiloop.tui.plot import nice_ticks, render_figure

T0 = 1_000_000.0


def started(**kw) -> RunStarted:
    base = dict(
        run_name="tiny",
        run_dir="/runs/tiny-1",
        device="cpu",
        device_name="cpu",
        epochs=10,
        steps_per_epoch=8,
        batch_size=16,
        train_size=120,
        val_size=40,
        problem="multiclass",
        metrics=["train_loss", "val_loss", "val_acc"],
        monitor="val_loss",
        mode="min",
        patience=3,
        num_params=99,
        time=T0,
    )
    base.update(kw)
    return RunStarted(**base)


def epoch_events(epoch: int, t: float, val_loss: float, best: bool, lr: float = 0.01, counter: int = 0) -> list:
    """Epoch ``epoch`` (from 1): 8 steps in two flushes, then validation, early-stop update and checkpoints."""
    first = (epoch - 1) * 8 + 1
    return [
        TrainSteps(epoch, first, [1.0 / (first + i) for i in range(4)], 4, lr, 1000.0, time=t + 0.5),
        TrainSteps(epoch, first + 4, [1.0 / (first + 4 + i) for i in range(4)], 8, lr, 1000.0, time=t + 1.0),
        Validated(
            epoch,
            first + 7,
            {"train_loss": 0.5, "val_loss": val_loss, "val_acc": 1 - val_loss},
            best,
            0.1,
            time=t + 1.1,
        ),
        EarlyStopUpdate(epoch, "val_loss", val_loss, val_loss if best else 0.1, counter, 3, counter >= 3, time=t + 1.1),
        *(
            [CheckpointSaved("best", "checkpoints/best.pt", epoch, first + 7, val_loss, "val_loss", time=t + 1.2)]
            if best
            else []
        ),
        CheckpointSaved("last", "checkpoints/last.pt", epoch, first + 7, val_loss, "val_loss", time=t + 1.2),
    ]


def test_downsampled_keeps_a_bounded_number_of_exact_bucket_means() -> None:
    s = Downsampled(resolution=8)
    for i in range(1000):
        s.append(i, float(i))
    xs, ys = s.points()
    assert s.count == 1000
    assert 8 <= len(s.xs) < 16  # full buckets stay within [resolution, 2*resolution)
    assert s.size == 64  # 1000 points / 64 per bucket = 15 full buckets
    assert xs[:2] == [31.5, 95.5] and ys[:2] == [31.5, 95.5]  # means of 0..63 and 64..127
    assert xs[-1] == pytest.approx((960 + 999) / 2)  # the partial bucket, last
    assert s.last == (999, 999.0)


def test_downsampled_work_per_append_does_not_grow_with_length() -> None:
    """Pairs merge once per doubling of the length, so merging adds O(1) amortized per append."""
    merged = 0
    s = Downsampled(resolution=64)
    original = s._merge_pairs

    def counting() -> None:
        nonlocal merged
        merged += len(s.xs)
        original()

    s._merge_pairs = counting  # type: ignore[method-assign]
    n = 200_000
    for i in range(n):
        s.append(i, 1.0)
    assert len(s.points()[0]) <= 2 * 64 + 1
    # one merge per doubling of the length, each over 2*resolution buckets: O(log n) merges in all
    assert 0 < merged <= 2 * 64 * math.ceil(math.log2(n))


def test_downsampled_skips_non_finite_values_but_counts_them() -> None:
    s = Downsampled(resolution=4)
    s.extend(1, [1.0, float("nan"), 3.0, float("inf")])
    xs, ys = s.points()
    assert s.count == 4
    assert ys == [1.0, 3.0] and xs == [1, 3]


def test_reduce_to_averages_equal_buckets_and_ema_is_bias_corrected() -> None:
    xs, ys = reduce_to(list(range(10)), [float(i) for i in range(10)], 5)
    assert xs == [0.5, 2.5, 4.5, 6.5, 8.5] and ys == xs
    assert ema([2.0, 2.0, 2.0], 5) == [2.0, 2.0, 2.0]  # bias-corrected: no pull towards zero
    out = ema([0.0, 10.0], 1)
    assert out == [0.0, 10.0]  # span 1 follows the data


def test_model_progress_best_metrics_early_stop_and_log() -> None:
    m = MonitorModel()
    m.apply(started())
    assert m.state == "running" and m.run_name == "tiny" and m.run_dir == "/runs/tiny-1"
    m.apply_all(epoch_events(1, T0, 0.40, True))
    m.apply_all(epoch_events(2, T0 + 1.2, 0.30, True))
    m.apply_all(epoch_events(3, T0 + 2.4, 0.35, False, counter=1))
    assert (m.epoch, m.epochs_done, m.step_in_epoch, m.step) == (3, 3, 8, 24)
    assert len(m.train) == 24 and m.train.last == (24, 1 / 24)
    assert m.best_value == 0.30 and m.best_epoch == 2 and m.best_point == (16, 0.30)
    assert m.metrics["val_loss"].best_epoch == 2
    assert m.metrics["val_loss"].best == 0.30 and m.metrics["val_loss"].last == 0.35
    assert m.metrics["val_acc"].higher_is_better and m.metrics["val_acc"].best == pytest.approx(0.70)
    assert m.early is not None and m.early.counter == 1
    texts = [e.text for e in m.log]
    # best + last at the same step share one line; lasts in a row collapse into one with a count
    assert sum("best.pt" in t for t in texts) == 2
    assert texts[-1].startswith("saved last checkpoints/last.pt  epoch 3")
    assert any("+ last.pt" in t for t in texts)


def test_model_logs_big_learning_rate_changes_only() -> None:
    m = MonitorModel()
    m.apply(started())
    m.apply(LRChanged(1, 8, 0.0099, 0.01, time=T0 + 1))  # a smooth schedule's step: no line
    assert not any("learning rate" in e.text for e in m.log) and m.lr == 0.0099
    m.apply(LRChanged(4, 32, 0.005, 0.01, time=T0 + 2))  # a plateau cut: a line
    assert m.log[-1].text == "learning rate 0.01 -> 0.005 (epoch 4)"
    assert m.lr_history.points() == ([8, 32], [0.0099, 0.005])


def test_model_eta_counts_running_time_only() -> None:
    m = MonitorModel()
    m.apply(started(epochs=10, steps_per_epoch=8))
    m.apply_all(epoch_events(1, T0, 0.4, True))  # 8 steps in 1.2 s of events
    per_step = m.seconds_per_step()
    assert per_step == pytest.approx(1.2 / 8)
    assert m.eta(T0 + 1.2) == pytest.approx(72 * per_step)
    m.apply(StateChanged("paused", time=T0 + 2))
    m.apply(StateChanged("running", time=T0 + 100))  # 98 s paused: not counted
    assert m.seconds_per_step() == pytest.approx((1.2 + 0.8) / 8)
    assert m.eta(T0 + 100) is not None


def test_the_model_gives_each_end_state_its_summary_line_and_exit_status() -> None:
    m = MonitorModel()
    m.apply(started())
    m.apply(
        Finished(
            "early_stopped", "val_loss did not improve for 3 checks", 7, 56, 0.2, 4, "val_loss", 12.0, time=T0 + 13
        )
    )
    assert m.over and m.state == "early_stopped" and m.exit_status() == 0
    assert "early stopped" in m.summary_line() and "best val_loss 0.2000 at epoch 4" in m.summary_line()

    m = MonitorModel()
    m.apply(started())
    m.apply(
        Failed(
            "ValueError: boom",
            "training, epoch 1, step 3: m.py:9 in forward",
            "Traceback ...\nValueError: boom\n",
            time=T0 + 1,
        )
    )
    m.apply(Finished("failed", "ValueError in training", 0, 2, None, None, "val_loss", 1.0, time=T0 + 1))
    assert m.exit_status() == 1 and m.state == "failed"

    m = MonitorModel("/runs/broken-1")
    m.apply(Failed("spec.toml, [data]: building data() raised", "setup", "", time=T0))
    m.apply(Finished("failed", "setup error", 0, 0, None, None, None, 0.0, time=T0))
    assert m.exit_status() == 2 and m.run_name == "broken-1"

    m = MonitorModel()
    m.apply(started())
    m.process_gone(-9, T0 + 5)
    assert m.state == "crashed" and m.over and m.exit_status() == 1
    assert "status -9" in m.log[-1].text

    m = MonitorModel()
    m.apply(started())
    m.apply(Finished("stopped", "stopped by request", 1, 9, None, None, "val_loss", 2.0, time=T0 + 2))
    m.process_gone(0, T0 + 3)  # a normal exit after its Finished event is not a crash
    assert m.state == "stopped" and m.exit_status() == 0

    m = MonitorModel()
    m.apply(started())
    m.apply(Finished("forced", "forced to exit without saving", 0, 5, None, None, "val_loss", 2.0, time=T0 + 2))
    m.process_gone(130, T0 + 3)
    assert m.state == "forced" and m.over and m.exit_status() == 130
    assert m.summary_line() == "tiny: forced (forced to exit without saving) after 0 epochs, 5 steps in 2.0s"

    m = MonitorModel()  # forced by killing it (it could not be told): still shown as forced
    m.apply(started())
    m.gone_status = "forced"
    m.process_gone(-9, T0 + 3)
    assert m.state == "forced" and m.exit_status() == 130


def test_a_resumed_runs_earlier_ending_does_not_end_the_view() -> None:
    old = [
        started(session="first"),
        *epoch_events(1, T0, 0.4, True),
        Finished("stopped", "stopped by request", 1, 8, 0.4, 1, "val_loss", 1.0, time=T0 + 2),
    ]
    m = MonitorModel(expect_session="second")
    m.apply_all(old)
    assert not m.over and m.state == "starting" and m.finished is None
    m.apply(started(session="second", start_epoch=1, start_step=8, resumed_from="checkpoints/last.pt", time=T0 + 10))
    assert m.state == "running" and m.step == 8
    m.apply(Finished("completed", "10 epochs done", 10, 80, 0.3, 5, "val_loss", 9.0, time=T0 + 20))
    assert m.over and m.finished is not None and m.exit_status() == 0

    m = MonitorModel(expect_session="second")  # the resumed process fails at setup: that is its ending
    m.apply_all(old)
    m.apply(Failed("spec.toml, [data]: building data() raised", "setup", "", time=T0 + 10))
    m.apply(Finished("failed", "setup error", 0, 0, None, None, None, 0.0, time=T0 + 10))
    assert m.over and m.exit_status() == 2

    m = MonitorModel()  # a read-only view of the whole history follows the log as it is
    m.apply_all(old)
    assert m.over and m.state == "stopped"


@pytest.mark.parametrize("width", [20, 36, 44, 80, 200])
def test_panels_never_exceed_their_width(width: int) -> None:
    m = MonitorModel("/a/very/long/path/to/runs/" + "x" * 120)
    m.apply(started(run_name="a-long-run-name-" * 4, device_name="cuda:0 (NVIDIA H100 80GB HBM3)"))
    for e in range(1, 5):
        m.apply_all(epoch_events(e, T0 + 1.2 * e, 0.4 - 0.01 * e, e < 3, counter=max(e - 2, 0)))
    m.apply(LRChanged(4, 32, 0.001, 0.01, time=T0 + 5))
    m.apply(Message("warning", "a setup warning that is longer than any terminal line " * 4, time=T0 + 5))
    m.apply(
        Failed(
            "RuntimeError: " + "y" * 300,
            "training, epoch 4, step 30: m.py:1 in forward",
            '  File "/home/u/m.py", line 1, in forward\n    raise RuntimeError()\nRuntimeError\n',
            time=T0 + 6,
        )
    )
    m.apply(Finished("failed", "RuntimeError in training", 4, 32, 0.38, 2, "val_loss", 6.0, time=T0 + 6))
    texts = [
        title_text(m, width, read_only=True),
        progress_text(m, T0 + 7, width),
        metrics_text(m, width),
        early_stop_text(m, width),
        lr_text(m, width),
        keys_text([("p", "Pause"), ("s", "Save"), ("q", "Stop")], width),
        error_text(m, width, 8),
        health_text(m, width),
    ]
    for text in texts:
        for line in text.plain.splitlines():
            assert len(line) <= width, (width, line)
    assert "FAILED" in texts[0].plain
    assert "TRIGGERED" not in texts[3].plain


def test_training_health_shows_the_gradient_norm_loss_scale_and_throughput() -> None:
    m = MonitorModel()
    m.apply(started())
    m.apply(TrainSteps(1, 1, [1.0, 0.9, 0.8], 3, 0.01, 500.0, time=T0 + 1))
    assert health_text(m, 60).plain.splitlines() == [f"samples/s  {500:>9} " + sparkline([500.0], 38)]
    m.apply(
        TrainSteps(
            1,
            4,
            [0.7, float("inf"), 0.6],
            6,
            0.01,
            700.0,
            grad_norms=[2.0, float("inf"), 1.5],
            loss_scale=32768.0,
            skipped_steps=1,
            time=T0 + 2,
        )
    )
    m.apply(TrainSteps(1, 7, [0.5], 7, 0.01, 600.0, grad_norms=[1.25], loss_scale=32768.0, time=T0 + 3))
    assert (m.grad_norms.last, m.loss_scale, m.skipped_steps) == ((7, 1.25), 32768.0, 1)
    lines = health_text(m, 60).plain.splitlines()
    assert lines[0].startswith("grad norm     1.2500 ") and lines[1].startswith("loss scale 32768  1 skipped step")
    assert lines[0].endswith(" █▃▁"), "the finite norms' history: 2.0, 1.5, 1.25 (the skipped step's inf is not drawn)"
    assert lines[2].startswith("samples/s ") and all(len(line) <= 60 for line in lines)
    m.apply(
        TrainSteps(1, 8, [0.5], 8, 0.01, 600.0, loss_scale=16384.0, skipped_steps=1, time=T0 + 4)
    )  # halved after an overflow
    assert health_text(m, 60).plain.splitlines()[1].endswith(" 2 skipped steps ██▁"), (
        "the loss scale's history: 32768, 32768, 16384"
    )


def test_early_stop_panel_marks_the_trigger() -> None:
    m = MonitorModel()
    m.apply(started(patience=3))
    assert "0/3" in early_stop_text(m, 40).plain
    m.apply(EarlyStopUpdate(5, "val_loss", 0.5, 0.3, 2, 3, False, time=T0))
    assert "2/3" in early_stop_text(m, 40).plain
    m.apply(EarlyStopUpdate(6, "val_loss", 0.5, 0.3, 3, 3, True, time=T0))
    text = early_stop_text(m, 40).plain
    assert "3/3" in text and "TRIGGERED" in text
    m = MonitorModel()
    m.apply(started(patience=None))
    assert early_stop_text(m, 40).plain.startswith("off")


def test_error_panel_shows_the_users_frames_the_engine_picked() -> None:
    tb = (
        "Traceback (most recent call last):\n"
        '  File "/x/site-packages/tuiloop/engine/trainer.py", line 227, in run\n    self._train_epoch(epoch)\n'
        '  File "/x/site-packages/torch/nn/modules/module.py", line 1778, in _wrapped_call_impl\n    return self._call_impl(*args, **kwargs)\n           ^^^^^^^^^\n'
        '  File "/home/me/models.py", line 16, in forward\n    raise ValueError("bad batch")\n'
        "ValueError: bad batch\n"
    )
    frames = ['File "/home/me/models.py", line 16, in forward', '  raise ValueError("bad batch")']
    m = MonitorModel()
    m.apply(Failed("ValueError: bad batch", "training, epoch 2, step 9: models.py:16 in forward", tb, frames, time=T0))
    lines = error_text(m, 100, 10).plain.splitlines()
    assert lines[0] == "ValueError: bad batch"
    assert "models.py:16 in forward" in lines[1]
    assert any("/home/me/models.py" in ln for ln in lines) and any(
        'raise ValueError("bad batch")' in ln for ln in lines
    )
    assert not any("torch" in ln or "trainer.py" in ln for ln in lines)


def test_loss_figure_is_at_plot_resolution_whatever_the_run_length() -> None:
    m = MonitorModel()
    m.apply(started(epochs=100_000, steps_per_epoch=100))
    step = 1
    for epoch in range(1, 2001):  # 200,000 steps
        m.apply(
            TrainSteps(epoch, step, [1.0 + math.sin(step + i) for i in range(100)], 100, 0.01, 1e4, time=T0 + epoch)
        )
        m.apply(Validated(epoch, step + 99, {"train_loss": 1.0, "val_loss": 1.0 / epoch}, True, 0.0, time=T0 + epoch))
        step += 100
    fig = loss_figure(m, 60)
    assert all(len(line.xs) <= 120 for line in fig.lines)
    assert fig.x_integer and max(fig.lines[0].xs) == pytest.approx(2000, rel=0.01)  # the x axis is in epochs
    text = render_figure(fig, 60, 16)
    lines = text.plain.splitlines()
    assert len(lines) == 16 and all(len(ln) <= 60 for ln in lines)
    assert "train" in lines[0] and "best" in lines[0]
    small = render_figure(lr_figure(m, 30), 30, 3)  # too low for a frame: bars
    assert len(small.plain.splitlines()) == 3


def test_numbers_durations_and_counts_read_the_same_everywhere_and_axis_ticks_are_round() -> None:
    assert (
        fmt.value(None) == "-"
        and fmt.value(0.12345) == "0.1235"
        and fmt.value(1.5e-5) == "1.5e-05"
        and fmt.value(float("nan")) == "nan"
    )
    assert fmt.value(12345.6) == "1.235e+04" and fmt.value(0.0) == "0.0000"
    assert fmt.clock(5.25) == "5.2s" and fmt.clock(75) == "1:15" and fmt.clock(3725) == "1:02:05"
    assert (
        fmt.duration(42) == "42s"
        and fmt.duration(245) == "4m05s"
        and fmt.duration(7380) == "2h03m"
        and fmt.duration(273600) == "3d04h"
    )
    assert (
        fmt.short_duration(45) == "45s"
        and fmt.short_duration(59.6) == "1:00"
        and fmt.short_duration(245) == "4:05"
        and fmt.short_duration(7380) == "2h03"
        and fmt.short_duration(None) == "-"
    )
    assert (
        fmt.plural(1, "step") == "1 step"
        and fmt.plural(2, "step") == "2 steps"
        and fmt.plural(1024, "batch", "batches") == "1,024 batches"
    )
    assert nice_ticks(0, 10, 6, integer=True) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(0.3, 1.0, 5) == [0.4, 0.6, 0.8, 1.0]


def test_the_monitor_does_not_import_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import tuiloop.tui.app, tuiloop.cli.monitor"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "textual" in out.stderr
    assert " torch" not in out.stderr and "torch." not in out.stderr


def test_a_resume_after_a_crash_redraws_the_steps_it_redoes() -> None:
    """The crashed session logged steps 1-30; its last.pt was at step 20: steps 21-30 are redone."""
    m = MonitorModel()
    m.apply(started(pid=100))
    m.apply(TrainSteps(1, 1, [1.0] * 30, 30, 0.01, 100.0, time=T0 + 1))
    m.apply(Validated(1, 20, {"train_loss": 1.0, "val_loss": 0.9}, True, 0.1, time=T0 + 1))
    m.apply(started(pid=200, start_epoch=1, start_step=20, resumed_from="checkpoints/last.pt", time=T0 + 10))
    xs, _ = m.train.points()
    assert xs and max(xs) <= 20 and m.step == 20
    m.apply(TrainSteps(2, 21, [0.5] * 10, 10, 0.01, 100.0, time=T0 + 11))
    xs, ys = m.train.points()
    assert xs == sorted(xs) and len(xs) == len(set(xs)) and max(xs) == 30 and ys[-1] == 0.5


def test_downsampled_drop_after_forgets_the_later_points_and_takes_new_ones() -> None:
    d = Downsampled(4)
    d.extend(1, [float(i) for i in range(1, 101)])
    d.drop_after(50)
    xs, _ = d.points()
    assert xs and max(xs) <= 50 and len(d) <= 50
    d.extend(51, [0.0] * 10)
    assert 50 < max(d.points()[0]) <= 60  # bucket means of the new points
    d.drop_after(0)
    assert d.points() == ([], []) and len(d) == 0


def test_a_manual_save_keeps_its_log_line_when_best_and_last_follow_at_the_same_step() -> None:
    m = MonitorModel()
    m.apply(started())
    m.apply(CheckpointSaved("manual", "checkpoints/manual-step0000008.pt", 0, 8, None, "val_loss", time=T0 + 1))
    m.apply(CheckpointSaved("best", "checkpoints/best.pt", 1, 8, 0.5, "val_loss", time=T0 + 1))
    m.apply(CheckpointSaved("last", "checkpoints/last.pt", 1, 8, 0.5, "val_loss", time=T0 + 1))
    m.apply(CheckpointSaved("last", "checkpoints/last.pt", 2, 16, 0.6, "val_loss", time=T0 + 2))
    m.apply(CheckpointSaved("last", "checkpoints/last.pt", 3, 24, 0.6, "val_loss", time=T0 + 3))
    texts = [e.text for e in m.log][-3:]
    assert "manual-step0000008.pt" in texts[0]
    assert "best.pt" in texts[1] and texts[1].endswith("+ last.pt")
    assert "last.pt  epoch 3" in texts[2] and m.log[-1].repeat == 2


def test_the_title_says_how_many_processes_train() -> None:
    m = MonitorModel()
    m.apply(started(world_size=4, backend="nccl", device_name="cuda:0 (NVIDIA H100)", nodes=["gpu1"]))
    assert "cuda:0 (NVIDIA H100) x4 (nccl)" in title_text(m, 120).plain
