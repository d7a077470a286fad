"""What the plots draw, as plain data: the monitor's model turned into lines at plot resolution.

Nothing here knows the plotting library; :mod:`tuiloop.tui.plot` draws a :class:`Figure`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tuiloop.engine import fmt
from tuiloop.rundir.series import Downsampled, Recent, ema, reduce_to
from tuiloop.tui.model import MonitorModel

# 256-colour palette numbers (what the terminal shows; Rich maps them to the same colours)
RAW = 244  # grey: the raw train loss (its extremes), faint behind the smoothed one
TRAIN = 45  # cyan-blue: smoothed train loss
VAL = 214  # orange: validation loss
BEST = 46  # green: the best point of the monitored loss
LR = 141  # violet: learning rate

ZOOMS = ("all", "last 10%", "epoch")  # what the loss plot shows: the whole run, its last tenth, the current epoch
X_AXES = ("epochs", "steps", "time")


@dataclass
class Line:
    """One series to draw: points, colour, marker (``braille`` or one character), joined or not."""

    xs: list[float]
    ys: list[float]
    color: int
    marker: str = "braille"
    joined: bool = True


@dataclass
class Figure:
    """A plot: its lines, a one-line legend above it, and how to draw the axes."""

    lines: list[Line] = field(default_factory=list)
    legend: list[tuple[str, int, int]] = field(
        default_factory=list
    )  # (text, colour, priority): low goes first when narrow
    log_y: bool = False
    x_integer: bool = False  # ticks on whole numbers (epochs, steps)
    x_time: bool = False  # ticks as durations (seconds since the start)
    y_ticks: int = 5
    empty_text: str = "waiting for data"
    key: tuple = ()  # equal keys draw equal pictures (lets the widget skip redraws)


@dataclass
class View:
    """How the user set the loss plot up (keys r, l, z, x)."""

    show_raw: bool = True
    log_y: bool = False
    zoom: str = "all"
    x_axis: str = "epochs"


def _finite(xs: list[float], ys: list[float], positive: bool = False) -> tuple[list[float], list[float]]:
    keep = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y) and (y > 0 or not positive)]
    return [p[0] for p in keep], [p[1] for p in keep]


class _Axis:
    """Turns steps into the x the user chose: epochs, steps, or seconds since the run's start."""

    def __init__(self, model: MonitorModel, x_axis: str) -> None:
        spe = model.started.steps_per_epoch if model.started and model.started.steps_per_epoch else None
        self.kind = x_axis if x_axis != "epochs" or spe else "steps"
        self.spe = spe
        self._times: tuple[list[float], list[float]] | None = None
        if self.kind == "time":
            steps, times = model.step_times.points()
            start = model.first_event_time or (times[0] if times else 0.0)
            self._times = (steps, [t - start for t in times])

    def __call__(self, steps: list[float]) -> list[float]:
        if self.kind == "epochs":
            spe = self.spe
            assert spe is not None  # the x axis is epochs only with steps per epoch
            return [s / spe for s in steps]
        if self.kind == "time":
            assert self._times is not None
            known_steps, seconds = self._times
            if len(known_steps) < 2:
                return [0.0 for _ in steps]
            return np.interp(steps, known_steps, seconds).tolist()
        return list(steps)


def _window(model: MonitorModel, zoom: str) -> tuple[float, float]:
    """The steps the loss plot shows."""
    last = float(model.step or 1)
    if zoom == "last 10%":
        return max(last * 0.9, 0.0), last
    if zoom == "epoch" and model.started and model.started.steps_per_epoch:
        spe = model.started.steps_per_epoch
        return float((model.epoch - 1) * spe), last
    return 0.0, last


def _in(xs: list[float], lo: float, hi: float, *others: list[float]) -> tuple[list[float], ...]:
    keep = [i for i, x in enumerate(xs) if lo <= x <= hi]
    return tuple([seq[i] for i in keep] for seq in (xs, *others))


def loss_figure(model: MonitorModel, width: int, view: View | None = None) -> Figure:
    """Train loss per step (its extremes, faint; smoothed) and validation loss per check, the best
    point of the monitored loss marked on its own curve.

    ``width`` is the plot's width in cells: lines are reduced to two points per cell (braille
    resolution), keeping each cell's minimum and maximum so a one-step spike stays visible.
    """
    v = view or View()
    axis = _Axis(model, v.x_axis)
    lo, hi = _window(model, v.zoom)
    fig = Figure(
        log_y=v.log_y,
        x_integer=axis.kind != "time",
        x_time=axis.kind == "time",
        key=(model.plot_version, v.show_raw, v.log_y, v.zoom, v.x_axis, width),
    )
    cells = max(2 * width, 2)
    # a zoomed window the last steps cover is drawn from them, step by step, not from the buckets
    train = model.train_recent if lo > 0 and model.train_recent.covers(lo) else model.train
    xs, ys = train.points()
    xs, ys = _in(xs, lo, hi, ys)
    xs, ys = reduce_to(xs, ys, cells)
    xs, ys = _finite(xs, ys, positive=v.log_y)
    if xs:
        if v.show_raw and len(xs) > 2:
            fig.lines.append(_envelope(train, lo, hi, cells, axis, v.log_y))
            fig.legend.append(("┃ min-max", RAW, 0))
        smooth = ema(ys, max(len(ys) / 25, 2.0)) if len(ys) > 2 else ys
        fig.lines.append(Line(axis(xs), smooth, TRAIN))
        fig.legend.append(("━ train", TRAIN, 3))
    vx, vy = model.val.points()
    vx, vy = _in(vx, lo, hi, vy)
    vx, vy = reduce_to(vx, vy, cells)
    vx, vy = _finite(vx, vy, positive=v.log_y)
    if vx:
        fig.lines.append(Line(axis(vx), vy, VAL, "braille", joined=True))
        if len(vx) <= width // 3:  # a dot per check while they are few enough to tell apart
            fig.lines.append(Line(axis(vx), vy, VAL, "•", joined=False))
        fig.legend.append((f"• val {fmt.value(vy[-1])}", VAL, 2))
    _best_marker(model, fig, axis, lo, hi, v.log_y)
    if v.log_y:
        fig.legend.append(("log y", 250, 4))
    if v.zoom != "all":
        fig.legend.append((f"zoom: {v.zoom}", 250, 4))
    if model.over:
        fig.empty_text = "no training steps were logged"
    else:
        fig.empty_text = "waiting for the first steps" if model.started else "waiting for the run to start"
    return fig


def _envelope(series: Downsampled | Recent, lo: float, hi: float, cells: int, axis: _Axis, log_y: bool) -> Line:
    """The raw loss as its extremes: each bucket's minimum then maximum, joined (a band that keeps spikes)."""
    xs, mins, maxs = series.envelope()
    xs, mins, maxs = _in(xs, lo, hi, mins, maxs)
    _, mins = reduce_to(xs, mins, cells // 2, "min")
    xs, maxs = reduce_to(xs, maxs, cells // 2, "max")
    px: list[float] = []
    py: list[float] = []
    for x, a, b in zip(axis(xs), mins, maxs, strict=True):
        for y in (a, b):
            if math.isfinite(y) and (y > 0 or not log_y):
                px.append(x)
                py.append(y)
    return Line(px, py, RAW)


def _best_marker(model: MonitorModel, fig: Figure, axis: _Axis, lo: float, hi: float, log_y: bool) -> None:
    """Mark the best value of the monitored metric on its curve, when its curve is this plot's:
    val_loss on the validation curve, train_loss on the training curve. The best of another
    metric (val_acc) is marked in the metrics panel instead."""
    monitor = model.started.monitor if model.started else None
    point = model.best_point
    if point is None or monitor not in ("val_loss", "train_loss"):
        if model.best_value is not None and monitor:
            fig.legend.append((f"best {monitor} {fmt.value(model.best_value)} (ep {model.best_epoch})", BEST, 1))
        return
    step, value = point
    if not lo <= step <= hi or (log_y and value <= 0):
        return
    fig.lines.append(Line(axis([step]), [value], BEST, "◆", joined=False))
    fig.legend.append((f"◆ best {fmt.value(value)} (ep {model.best_epoch})", BEST, 1))


def lr_figure(model: MonitorModel, width: int) -> Figure:
    """The learning rate over training (x in epochs when known), on a log axis once it spans a
    factor of 10 (repeated halvings would flatten into the bottom of a linear one)."""
    spe = model.started.steps_per_epoch if model.started and model.started.steps_per_epoch else None
    scale = 1.0 / spe if spe else 1.0
    xs, ys = model.lr_history.points()
    xs, ys = reduce_to(xs, ys, max(2 * width, 2))
    xs, ys = _finite([x * scale for x in xs], ys)
    positive = [y for y in ys if y > 0]
    log_y = bool(positive) and len(positive) == len(ys) and max(positive) >= 10 * min(positive)
    fig = Figure(
        x_integer=spe is not None,
        y_ticks=2,
        log_y=log_y,
        key=(model.plot_version, width),
        empty_text="no learning rate yet",
    )
    if xs:
        fig.lines.append(Line(xs, ys, LR))
    if log_y:
        fig.legend.append(("log y", 250, 4))
    return fig
