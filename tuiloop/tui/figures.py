"""What the plots draw, as plain data: the monitor's model turned into lines at plot resolution.

Nothing here knows the plotting library; :mod:`tuiloop.tui.plot` draws a :class:`Figure`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tuiloop.engine import fmt
from tuiloop.tui.model import MonitorModel
from tuiloop.tui.series import ema, reduce_to

# 256-colour palette numbers (what the terminal shows; Rich maps them to the same colours)
RAW = 244  # grey: the raw train loss, faint behind the smoothed one
TRAIN = 45  # cyan-blue: smoothed train loss
VAL = 214  # orange: validation loss
BEST = 46  # green: the best validation point
LR = 141  # violet: learning rate


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
    legend: list[tuple[str, int, int]] = field(default_factory=list)  # (text, colour, priority): low goes first when narrow
    log_y: bool = False
    x_integer: bool = False  # ticks on whole numbers (epochs)
    y_ticks: int = 5
    empty_text: str = "waiting for data"
    key: tuple = ()  # equal keys draw equal pictures (lets the widget skip redraws)


def _finite(xs: list[float], ys: list[float], positive: bool = False) -> tuple[list[float], list[float]]:
    keep = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y) and (y > 0 or not positive)]
    return [p[0] for p in keep], [p[1] for p in keep]


def loss_figure(model: MonitorModel, width: int, show_raw: bool = True, log_y: bool = False) -> Figure:
    """Train loss per step (raw, faint; and smoothed) and validation loss per check, best marked.

    The x axis is in epochs when the steps per epoch are known, else in steps. ``width`` is the
    plot's width in cells: lines are reduced to two points per cell (braille resolution).
    """
    spe = model.started.steps_per_epoch if model.started and model.started.steps_per_epoch else None
    scale = 1.0 / spe if spe else 1.0
    fig = Figure(log_y=log_y, x_integer=spe is not None, key=(model.version, show_raw, log_y, width))
    xs, ys = model.train.points()
    xs, ys = reduce_to(xs, ys, max(2 * width, 2))
    xs = [x * scale for x in xs]
    xs, ys = _finite(xs, ys, positive=log_y)
    if xs:
        if show_raw and len(xs) > 2:
            fig.lines.append(Line(xs, ys, RAW))
        smooth = ema(ys, max(len(ys) / 25, 2.0)) if len(ys) > 2 else ys
        fig.lines.append(Line(xs, smooth, TRAIN))
        fig.legend.append(("━ train", TRAIN, 3))
        if show_raw and len(xs) > 2:
            fig.legend.append(("━ raw", RAW, 0))
    vx, vy = model.val.points()
    vx, vy = reduce_to(vx, vy, max(2 * width, 2))
    vx, vy = _finite([x * scale for x in vx], vy, positive=log_y)
    if vx:
        fig.lines.append(Line(vx, vy, VAL, "braille", joined=True))
        if len(vx) <= width // 3:  # a dot per check while they are few enough to tell apart
            fig.lines.append(Line(vx, vy, VAL, "•", joined=False))
        fig.legend.append((f"• val {fmt.value(vy[-1])}", VAL, 2))
    if model.best_val_point is not None:
        bx, by = model.best_val_point
        if by > 0 or not log_y:
            fig.lines.append(Line([bx * scale], [by], BEST, "◆", joined=False))
            monitor = model.started.monitor if model.started else None
            what = fmt.value(by) if monitor in (None, "val_loss") else f"{monitor} {fmt.value(model.best_value)}"
            where = f"ep {round(bx * scale)}" if spe else f"step {int(bx)}"
            fig.legend.append((f"◆ best {what} ({where})", BEST, 1))
    if model.over:
        fig.empty_text = "no training steps were logged"
    else:
        fig.empty_text = "waiting for the first steps" if model.started else "waiting for the run to start"
    return fig


def lr_figure(model: MonitorModel, width: int) -> Figure:
    """The learning rate over training (x in epochs when known)."""
    spe = model.started.steps_per_epoch if model.started and model.started.steps_per_epoch else None
    scale = 1.0 / spe if spe else 1.0
    xs, ys = model.lr_history.points()
    xs, ys = reduce_to(xs, ys, max(2 * width, 2))
    xs, ys = _finite([x * scale for x in xs], ys)
    fig = Figure(x_integer=spe is not None, y_ticks=2, key=(model.version, width), empty_text="no learning rate yet")
    if xs:
        fig.lines.append(Line(xs, ys, LR))
    return fig
