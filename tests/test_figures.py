"""What the plots draw: the best marker on its own metric's curve, log axes in powers of ten,
spikes kept at a million steps, zoom windows and the three x axes."""

from __future__ import annotations

import math
import re

import pytest
from rich.console import Console

from tuiloop.engine.events import RunStarted, SettingChanged, TrainSteps, Validated
from tuiloop.tui.figures import BEST, RAW, TRAIN, View, loss_figure, lr_figure
from tuiloop.tui.model import MonitorModel
from tuiloop.tui.plot import log_ticks, render_figure

T0 = 1_700_000_000.0


def run(
    epochs: int = 10, spe: int = 100, monitor: str = "val_loss", mode: str = "min", spike_at: int | None = None
) -> MonitorModel:
    """A run whose val_loss is best at epoch 4 and val_acc best at epoch 7; 1 s per epoch."""
    m = MonitorModel()
    m.apply(
        RunStarted(
            run_name="fig",
            run_dir="/r",
            device="cpu",
            device_name="cpu",
            epochs=epochs,
            steps_per_epoch=spe,
            batch_size=8,
            train_size=800,
            val_size=100,
            problem="multiclass",
            metrics=["train_loss", "val_loss", "val_acc"],
            monitor=monitor,
            mode=mode,
            patience=None,
            num_params=10,
            time=T0,
        )
    )
    best_loss = best_acc = None
    for e in range(1, epochs + 1):
        first = (e - 1) * spe + 1
        losses = [2.0 / math.sqrt(first + i) for i in range(spe)]
        if spike_at is not None and first <= spike_at < first + spe:
            losses[spike_at - first] = 50.0
        m.apply(TrainSteps(e, first, losses, spe, 0.1, 1e3, time=T0 + e))
        val = 1.0 - 0.1 * min(e, 4) + 0.05 * max(e - 4, 0)
        acc = 0.5 + 0.05 * min(e, 7) - 0.02 * max(e - 7, 0)
        is_best = (
            (best_loss is None or val < best_loss) if monitor == "val_loss" else (best_acc is None or acc > best_acc)
        )
        best_loss = val if best_loss is None or val < best_loss else best_loss
        best_acc = acc if best_acc is None or acc > best_acc else best_acc
        m.apply(
            Validated(e, e * spe, {"train_loss": 0.5, "val_loss": val, "val_acc": acc}, is_best, 0.0, time=T0 + e + 0.1)
        )
    return m


def test_the_best_val_loss_is_marked_on_the_validation_curve() -> None:
    fig = loss_figure(run(), 60)
    (best,) = [ln for ln in fig.lines if ln.color == BEST]
    assert best.xs == [pytest.approx(4.0)] and best.ys == [pytest.approx(0.6)], "epoch 4 (x in epochs), val_loss 0.6"
    assert any("◆ best 0.6000 (ep 4)" in text for text, _, _ in fig.legend)


def test_the_best_of_a_metric_that_is_not_plotted_is_not_drawn_on_the_loss_curves() -> None:
    fig = loss_figure(run(monitor="val_acc", mode="max"), 60)
    assert not [ln for ln in fig.lines if ln.color == BEST], "no ◆ on val_loss for the best val_acc"
    assert any(text.startswith("best val_acc 0.8500 (ep 7)") for text, _, _ in fig.legend)


@pytest.mark.parametrize(("epochs", "width", "cell"), [(10, 30, 6), (200, 40, 1), (200, 20, 0)])
def test_the_best_val_acc_is_marked_in_its_sparkline_over_the_whole_run(epochs: int, width: int, cell: int) -> None:
    """val_acc is best at epoch 7: its cell is green, however long the run (at 200 epochs and 40
    cells each cell holds 5 checks, and epoch 7 is in the second; at 20 cells, 10 checks, the first)."""
    from tuiloop.tui.panels.training import best_sparkline

    stat = run(epochs=epochs, monitor="val_acc", mode="max").metrics["val_acc"]
    assert stat.best_epoch == 7
    text = best_sparkline(stat, width)
    assert len(text.plain) == min(epochs, width)
    green = [i for i in range(len(text.plain)) if "green" in str(text.get_style_at_offset(Console(), i))]
    assert green == [cell]


def test_log_axes_tick_at_powers_of_ten_and_say_they_are_log() -> None:
    assert log_ticks(0.0012, 2.288) == [0.01, 0.1, 1.0]
    assert log_ticks(0.05, 0.9) == [0.05, 0.1, 0.2, 0.5]  # less than two decades: 1, 2, 5 times them
    assert log_ticks(0.91, 1.23) == [1.0, 1.2]  # within a decade: round values, not 0.910617 and 1.23252
    text = render_figure(loss_figure(run(epochs=30), 70, View(log_y=True)), 70, 20).plain
    assert "log y" in text.splitlines()[0]
    labels = set(re.findall(r"^\s*([0-9.e+-]+)┤", text, re.M))
    assert labels and labels <= {"0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1", "2"}, labels


def test_the_learning_rate_plot_goes_log_once_it_spans_a_factor_of_ten() -> None:
    m = run(epochs=3)
    assert not lr_figure(m, 40).log_y
    for i, lr in enumerate((0.05, 0.025, 0.0125, 0.00625)):
        m.apply(SettingChanged("optimizer.lr", lr * 2, lr, 3, 300 + i, "command lr_down", time=T0 + 10 + i))
    assert lr_figure(m, 40).log_y and "log y" in render_figure(lr_figure(m, 40), 40, 6).plain.splitlines()[0]


def test_a_one_step_spike_is_drawn_at_a_million_steps() -> None:
    m = run(epochs=100, spe=10_000, spike_at=654_321)
    fig = loss_figure(m, 60)
    (band,) = [ln for ln in fig.lines if ln.color == RAW]
    assert max(band.ys) == 50.0 and len(band.xs) <= 2 * 60 + 2
    (train,) = [ln for ln in fig.lines if ln.color == TRAIN]
    assert max(train.ys) < 5, "the smoothed line alone would hide it"
    assert not [ln for ln in loss_figure(m, 60, View(show_raw=False)).lines if ln.color == RAW]


def test_zoom_shows_the_last_tenth_or_the_current_epoch() -> None:
    m = run(epochs=10, spe=100)
    last = loss_figure(m, 60, View(zoom="last 10%", x_axis="steps"))
    (train,) = [ln for ln in last.lines if ln.color == TRAIN]
    assert min(train.xs) >= 900 and max(train.xs) == pytest.approx(1000, abs=5)
    m.apply(TrainSteps(11, 1001, [0.3] * 40, 40, 0.1, 1e3, time=T0 + 12))  # 40 steps into epoch 11
    epoch = loss_figure(m, 60, View(zoom="epoch", x_axis="steps"))
    (train,) = [ln for ln in epoch.lines if ln.color == TRAIN]
    assert min(train.xs) >= 1000 and max(train.xs) <= 1040
    assert any("zoom: epoch" in text for text, _, _ in epoch.legend)


def test_zoom_into_the_last_epoch_of_a_million_steps_draws_it_step_by_step() -> None:
    """The whole-run buckets hold a thousand steps each at 1e6 steps; the zoomed plot draws the
    last epoch from the steps themselves: as many points as the plot has room for, and a
    one-step spike in it at its own step."""
    m = run(epochs=100, spe=10_000)
    spike = 1_003_500
    m.apply(
        TrainSteps(
            101,
            1_000_001,
            [50.0 if 1_000_001 + i == spike else 0.1 for i in range(4000)],
            4000,
            0.1,
            1e3,
            time=T0 + 101,
        )
    )
    buckets = [x for x in m.train.points()[0] if x > 1_000_000]
    fig = loss_figure(m, 60, View(zoom="epoch", x_axis="steps"))
    (train,) = [ln for ln in fig.lines if ln.color == TRAIN]
    (band,) = [ln for ln in fig.lines if ln.color == RAW]
    assert len(buckets) <= 4 and len(train.xs) >= 100, "the buckets have a few points there; the steps fill the plot"
    assert min(train.xs) > 1_000_000 and max(band.ys) == 50.0
    assert min(abs(x - spike) for x, y in zip(band.xs, band.ys, strict=True) if y == 50.0) <= 4000 / 60, (
        "the spike at its step, to a cell"
    )


def test_the_x_axis_shows_epochs_steps_or_wall_time() -> None:
    m = run(epochs=10, spe=100)
    xs = {
        axis: [ln for ln in loss_figure(m, 60, View(x_axis=axis)).lines if ln.color == TRAIN][0].xs
        for axis in ("epochs", "steps", "time")
    }
    assert max(xs["epochs"]) == pytest.approx(10, abs=0.1)
    assert max(xs["steps"]) == pytest.approx(1000, abs=10)
    assert 0 < max(xs["time"]) <= 10.5, "seconds since the start"
    text = render_figure(loss_figure(m, 60, View(x_axis="time")), 60, 16).plain
    assert re.search(r"\b\d+s\b", text.splitlines()[-1]), "durations under the axis"


def test_plotexts_colours_are_decoded_as_rich_decodes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plot's own ANSI decoder gives every character the colour rich's decoder gives it."""
    from rich.text import Text

    from tuiloop.tui import plot

    drawn: list[str] = []
    decode = plot._from_ansi
    monkeypatch.setattr(plot, "_from_ansi", lambda out: (drawn.append(out), decode(out))[1])
    m = run(epochs=30)
    for fig, w, h in (
        (loss_figure(m, 75), 75, 24),
        (lr_figure(m, 44), 44, 12),
        (loss_figure(m, 75, View(log_y=True, x_axis="time")), 75, 24),
    ):
        render_figure(fig, w, h)
    assert len(drawn) == 3

    def colours(text: Text) -> list[tuple[str, int | None]]:
        return [
            (seg.text[i], seg.style.color.number if seg.style and seg.style.color else None)
            for seg in text.render(Console())
            for i in range(len(seg.text))
        ]

    for out in drawn:
        ours, rich_ = decode(out), Text.from_ansi(out, no_wrap=True)
        assert ours.plain == rich_.plain and colours(ours) == colours(rich_)
        assert any(number is not None for _, number in colours(ours))
    assert decode("\x1b[1mbold\x1b[0m").plain == "bold", "a code plotext does not use goes to rich's decoder"
