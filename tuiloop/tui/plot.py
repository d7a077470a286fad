"""The one place that knows the plotting library: plotext draws a :class:`Figure` into Rich text.

:func:`render_figure` builds the picture for a given size; :class:`PlotView` is the Textual
widget that shows it, redrawing only when the figure or its own size changed.
"""

from __future__ import annotations

import functools
import math
import re

import plotext
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Span, Text
from textual.strip import Strip
from textual.widget import Widget

from tuiloop.engine import fmt
from tuiloop.tui.figures import Figure, Line

MIN_WIDTH, MIN_HEIGHT = 16, 1
FRAMED_HEIGHT = 6  # below this a framed plot has almost no room inside: draw bars instead
BLOCKS = " ▁▂▃▄▅▆▇█"


def nice_ticks(lo: float, hi: float, count: int, integer: bool = False) -> list[float]:
    """About ``count`` round tick positions (1, 2 or 5 times a power of ten) inside [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo or count < 2:
        return [lo]
    raw = (hi - lo) / (count - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10)), key=lambda s: abs(math.log(s / raw)))
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + 1e-9 * step:
        ticks.append(round(t, 10))
        t += step
    return ticks or [lo]


def _tick_label(value: float, integer: bool) -> str:
    if integer:
        return str(int(round(value)))
    return f"{value:.3g}"


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values for a log axis from ``lo`` to ``hi`` (both > 0): the powers of ten inside, or
    1, 2 and 5 times them when the range spans less than two decades, or round values when it
    spans less than one."""
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for mantissas in ((1.0,), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)):
        ticks = [m * 10.0**e for e in range(first, last + 1) for m in mantissas if lo <= m * 10.0**e <= hi]
        if len(ticks) >= 2:
            return ticks
    return nice_ticks(lo, hi, 3)  # inside a fraction of a decade a log axis is nearly linear: round values


def _limits(values: list[float], log: bool) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi > lo:
        return lo, hi
    pad = abs(lo) * 0.1 or 1.0
    return (lo / 2, lo * 2) if log and lo > 0 else (lo - pad, hi + pad)


def _legend_text(fig: Figure, width: int) -> Text:
    """The legend in one line; when it is too long, the least important pieces go first."""
    pieces = list(fig.legend)
    while len(pieces) > 1 and sum(len(p[0]) + 2 for p in pieces) - 2 > width:
        pieces.remove(min(pieces, key=lambda p: p[2]))
    text = Text(no_wrap=True, overflow="ellipsis")
    for i, (piece, color, _) in enumerate(pieces):
        if i:
            text.append("  ")
        text.append(piece, style=f"color({color})")
    text.truncate(width, overflow="ellipsis")
    return text


def render_figure(fig: Figure, width: int, height: int) -> Text:
    """The figure drawn into ``width`` x ``height`` cells: a legend line, then the plot."""
    legend = _legend_text(fig, width) if fig.legend else None
    plot_h = height - (1 if legend is not None else 0)
    points = [ln for ln in fig.lines if ln.xs]
    if not points or width < MIN_WIDTH or plot_h < MIN_HEIGHT:
        msg = fig.empty_text if not points else "(too small to plot)"
        return Text(msg[:width], style="dim", no_wrap=True)
    try:
        body = (
            _plotext(fig, points, width, plot_h)
            if plot_h >= FRAMED_HEIGHT
            else _bars(fig, _main_line(points), width, plot_h)
        )
    except Exception as e:  # a plotting bug must never take the monitor down
        body = Text(f"(plot failed: {type(e).__name__}: {e})"[: width * plot_h], style="red")
    if legend is None:
        return body
    return Text("\n").join([legend, body])


def _main_line(lines: list[Line]) -> Line:
    """The series a one-series view shows: the longest, the later one of equals (drawn on top)."""
    return max(enumerate(lines), key=lambda item: (len(item[1].xs), item[0]))[1]


def _bars(fig: Figure, line: Line, width: int, height: int) -> Text:
    """A small plot without a frame: one block bar per column, min and max labelled on the left."""
    lo, hi = _limits(line.ys, False)
    labels = [_tick_label(hi, False), _tick_label(lo, False)]
    label_w = max(map(len, labels))
    cols = max(width - label_w - 1, 1)
    n = len(line.ys)
    values = (
        [line.ys[min(int(i * n / cols), n - 1)] for i in range(cols)]
        if n < cols
        else [
            sum(chunk) / len(chunk)
            for chunk in (
                line.ys[int(i * n / cols) : max(int((i + 1) * n / cols), int(i * n / cols) + 1)] for i in range(cols)
            )
        ]
    )
    eighths = [max(1, round((v - lo) / (hi - lo) * height * 8)) for v in values]
    rows = []
    for r in range(height):
        floor = (height - 1 - r) * 8
        label = labels[0] if r == 0 else labels[1] if r == height - 1 else ""
        row = Text()
        row.append(f"{label:>{label_w}} ", style="dim")
        row.append("".join(BLOCKS[min(max(e - floor, 0), 8)] for e in eighths), style=f"color({line.color})")
        rows.append(row)
    return Text("\n").join(rows)


def _plotext(fig: Figure, lines: list, width: int, height: int) -> Text:
    f = plotext.figure
    f.clear()
    plotext.terminal.limit(
        False, False
    )  # the widget's size rules, not what plotext thinks the terminal is (80x24 off a tty)
    f.theme("simple")
    f.canvas("default")
    f.legend(False)
    f.plot_size(width, height)
    xs = [x for ln in lines for x in ln.xs]
    ys = [y for ln in lines for y in ln.ys]
    x0, x1 = _limits(xs, False)
    y0, y1 = _limits(ys, fig.log_y)
    xr = f.ruler("x")
    xr.lim(x0, x1)
    ticks = nice_ticks(x0, x1, max(2, min(7, width // 10)), integer=fig.x_integer and not fig.x_time)
    xr.ticks(ticks, [fmt.short_duration(t) if fig.x_time else _tick_label(t, fig.x_integer) for t in ticks])
    yr = f.ruler("y")
    # A log axis is drawn as log10(y) on a linear one, ticked at powers of ten: 10, 1, 0.1, ...
    to_y = (lambda v: math.log10(v)) if fig.log_y else (lambda v: v)
    yr.lim(to_y(y0), to_y(y1))
    if fig.log_y:
        yticks = log_ticks(y0, y1)
        yr.ticks([math.log10(t) for t in yticks], [f"{t:g}" for t in yticks])
    else:
        yticks = nice_ticks(y0, y1, max(2, min(fig.y_ticks, height // 2)))
        yr.ticks(yticks, [_tick_label(t, False) for t in yticks])
    for ln in lines:
        marker = plotext.marker(ln.marker, plotext.pixel(foreground=ln.color))
        signal = f.signal(ln.xs, [to_y(y) for y in ln.ys] if fig.log_y else ln.ys, marker=marker)
        if ln.joined and len(ln.xs) > 1:
            signal.lines()
        f.draw(signal)
    return _from_ansi(f.build().string().rstrip("\n"))


_ANSI = re.compile(r"\x1b\[([0-9;]*)m")


def _from_ansi(out: str) -> Text:
    """plotext's output as Text: it colours with two codes only, reset and a 256-colour foreground
    (rich's general ANSI decoder took a fifth of the drawing time). Other codes: rich decodes."""
    plain: list[str] = []
    spans: list[Span] = []
    at, pos, colour = 0, 0, ""
    for m in _ANSI.finditer(out):
        piece = out[pos : m.start()]
        if piece and colour:
            spans.append(Span(at, at + len(piece), colour))
        plain.append(piece)
        at += len(piece)
        pos = m.end()
        code = m.group(1)
        if code in ("0", ""):
            colour = ""
        elif code.startswith("38;5;") and code[5:].isdigit():
            colour = f"color({code[5:]})"
        else:
            return Text.from_ansi(out, no_wrap=True)
    piece = out[pos:]
    if piece and colour:
        spans.append(Span(at, at + len(piece), colour))
    plain.append(piece)
    return Text("".join(plain), spans=spans, no_wrap=True)


class PlotView(Widget):
    """A plot of ours: set a :class:`Figure`; it draws at whatever size the layout gives it.

    It hands Textual its lines as strips (Textual's line API), made straight from the picture's
    segments: a plot is hundreds of coloured braille cells, and Textual's general path from a
    rich Text to strips cost more than drawing the plot.
    """

    DEFAULT_CSS = """
    PlotView { height: 1fr; min-height: 3; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.figure = Figure()
        self._shown = 0  # figures shown so far: a new one is drawn anew
        self._strips: list[Strip] = []
        self._strips_key: tuple | None = None  # (figure, size, base style) the strips were drawn for

    def show(self, figure: Figure) -> None:
        """Draw ``figure`` at the next refresh, unless it is the one already shown."""
        if figure.key and figure.key == self.figure.key:
            return
        self.figure = figure
        self._shown += 1
        self.refresh()

    def render(self) -> Text:
        """The picture at the current size."""
        size = self.content_size
        return render_figure(self.figure, size.width, size.height)

    def render_line(self, y: int) -> Strip:
        """Line ``y`` of the picture; it is drawn once per figure, size and style."""
        width = self.content_size.width
        base = self.visual_style.rich_style
        key = (self._shown, self.content_size, base)
        if key != self._strips_key:
            self._strips = _strips(self.render(), width, base)
            self._strips_key = key
        return self._strips[y] if y < len(self._strips) else Strip.blank(width, base)


def _strips(text: Text, width: int, base: Style) -> list[Strip]:
    """``text`` as one strip per line of ``width`` cells, its styles over ``base``."""
    console = _console()
    styles: dict[object, Style] = {}
    out = []
    for line in text.split("\n", allow_blank=True):
        segments = []
        for seg in line.render(console):
            style = styles.get(seg.style)
            if style is None:
                style = styles[seg.style] = base + seg.style if seg.style else base
            segments.append(Segment(seg.text, style))
        out.append(Strip(segments).adjust_cell_length(width, base))
    return out


@functools.cache
def _console() -> Console:
    return Console(width=1000, color_system="truecolor", force_terminal=True, legacy_windows=False)
