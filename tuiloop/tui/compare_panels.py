"""What ``tuiloop compare`` draws, as plain data and Rich text: the metric-by-epoch figure, the
table of runs and differing spec values, the title line. Testable without Textual.

Narrow terminals lose pieces (spec values are shortened, then the runs that do not fit are
left out and counted), never digits of a number.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

from tuiloop.engine import fmt
from tuiloop.rundir.comparison import Comparison, RunHistory
from tuiloop.rundir.series import reduce_to
from tuiloop.tui.figures import Figure, Line

# 256-colour numbers, one per run, far apart on the colour wheel; repeats after ten runs
PALETTE = (45, 214, 141, 46, 203, 226, 33, 207, 118, 248)
DIM = 244
STATE_STYLES = {
    "running": "bold green",
    "paused": "bold yellow",
    "finished": "",
    "early_stopped": "",
    "stopped": "yellow",
    "failed": "bold red",
    "forced": "red",
    "crashed": "bold red",
}


def color(i: int) -> int:
    """The colour of the ``i``-th run, in the plot and the table alike."""
    return PALETTE[i % len(PALETTE)]


def metric_figure(cmp: Comparison, metric: str, width: int, log_y: bool = False) -> Figure:
    """``metric`` by epoch for every run, each in its colour, its best validation marked with ◆."""
    fig = Figure(
        log_y=log_y,
        x_integer=True,
        key=(cmp.version, metric, log_y, width),
        empty_text=f"no run has validated {metric} yet",
    )
    cells = max(2 * width, 2)
    for i, run in enumerate(cmp.runs):
        c = color(i)
        fig.legend.append((f"━ {cmp.names[i]}", c, 10))
        xs, ys = run.points(metric)
        if log_y:
            xs, ys = [x for x, y in zip(xs, ys, strict=True) if y > 0], [y for y in ys if y > 0]
        if not xs:
            continue
        fx, fy = reduce_to([float(x) for x in xs], ys, cells)
        fig.lines.append(Line(fx, fy, c))
        if len(xs) <= width // 4:  # a dot per validation while they are few enough to tell apart
            fig.lines.append(Line(fx, fy, c, "•", joined=False))
    for i, run in enumerate(cmp.runs):  # drawn last: on top of every line
        best = cmp.best(run, metric)
        if best is not None and (best[1] > 0 or not log_y):
            fig.lines.append(Line([float(best[0])], [best[1]], color(i), "◆", joined=False))
    if fig.lines:
        fig.legend.append(("◆ best", DIM, 1))
    if log_y:
        fig.legend.append(("log y", DIM, 0))
    return fig


def title_text(cmp: Comparison, metric: str, width: int) -> Text:
    """The top line: what is compared, the metric shown (m: the next), how many runs are live."""
    names = cmp.metric_names()
    live = sum(r.live for r in cmp.runs)
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(" tuiloop ", style="bold reverse")
    t.append("  compare ", style="bold")
    t.append(f"{len(cmp.runs)} runs")
    if live:
        t.append(f" ({live} live)", style="green")
    t.append("   metric ")
    t.append(metric, style="bold")
    if metric in names and len(names) > 1:
        t.append(f" ({names.index(metric) + 1}/{len(names)})", style="dim")
    t.truncate(width, overflow="ellipsis")
    return t


# ---- the table ------------------------------------------------------------------------------
@dataclass
class _Row:
    label: str
    cells: list[str]
    styles: list[str]
    cuttable: bool  # spec values: text that may be shortened (numbers never are)


def _is_number(text: str) -> bool:
    try:
        float(text.split(" @")[0])
    except ValueError:
        return text in ("-", "?", "true", "false")
    return True


def _best_cell(cmp: Comparison, run: RunHistory, metric: str) -> str:
    best = cmp.best(run, metric)
    return "-" if best is None else f"{fmt.value(best[1])} @{best[0]}"


def _unread(run: RunHistory) -> str:
    """What of a run could not be read: its log's lines, and run.json / summary.json fields."""
    parts = [fmt.plural(run.skipped, "log line")] if run.skipped else []
    parts += [fmt.plural(len(run.problems), "file field")] if run.problems else []
    return ", ".join(parts) or "-"


def _rows(cmp: Comparison, metric: str) -> tuple[list[_Row], list[_Row]]:
    """The rows about the runs (always shown), and one per differing spec key."""
    runs = cmp.runs
    colors = [f"color({color(i)})" for i in range(len(runs))]
    fixed = [
        _Row("state", [r.shown_state for r in runs], [STATE_STYLES.get(r.shown_state, "") for r in runs], False),
        _Row(
            "epochs",
            [f"{r.epochs_done}/{r.epochs if r.epochs is not None else '?'}" for r in runs],
            [""] * len(runs),
            False,
        ),
        _Row(f"best {metric}", [_best_cell(cmp, r, metric) for r in runs], colors, False),
    ]
    if any(r.skipped or r.problems for r in runs):  # what could not be read is said, not dropped silently
        fixed.append(_Row("unreadable", [_unread(r) for r in runs], ["yellow"] * len(runs), False))
    spec = [_Row(key, values, [""] * len(runs), True) for key, values in cmp.differing()]
    return fixed, spec


def _cut(text: str, width: int, middle: bool = False) -> str:
    """Shorten text to ``width``: its end replaced by …, or (names) its middle by ~ so the
    unique tail stays."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    if middle and width > 5:
        tail = (width - 1) // 2
        return text[: width - 1 - tail] + "~" + text[-tail:]
    return text[: width - 1] + "…"


def _widths(names: list[str], rows: list[_Row], level: int) -> tuple[int, list[int]]:
    """Column widths at a level of squeezing: 0 roomy, 1 text values shortened, 2 tight."""
    cap = (28, 14, 8)[level]
    label = max(len(r.label) for r in rows)
    label = min(label, (40, 22, 14)[level])
    cols = []
    for i, name in enumerate(names):
        need = max((len(r.cells[i]) for r in rows if not r.cuttable or _is_number(r.cells[i])), default=1)
        text = max((min(len(r.cells[i]), cap) for r in rows if r.cuttable and not _is_number(r.cells[i])), default=1)
        cols.append(max(need, text, min(len(name), cap)))
    return label, cols


def table_text(cmp: Comparison, metric: str, width: int, height: int) -> Text:
    """The runs as columns (short names, in their colours) and a row per thing that tells them
    apart: state, epochs, the best of ``metric``, then every spec value that differs."""
    fixed, spec = _rows(cmp, metric)
    names = list(cmp.names)
    rows = fixed + spec
    shown = len(names)
    gap = 2
    for level, gap in ((0, 2), (1, 2), (2, 1)):
        label_w, cols = _widths(names, rows, level)
        if label_w + sum(gap + w for w in cols) <= width:
            break
    while shown > 1 and label_w + sum(gap + w for w in cols[:shown]) > width:
        shown -= 1  # drop whole runs from the right: a number is never cut
    cols = cols[:shown]

    def line(label: str, cells: list[str], styles: list[str], cuttable: bool, label_style: str = "dim") -> Text:
        t = Text(no_wrap=True, overflow="crop")
        t.append(_cut(label, label_w, middle=True).ljust(label_w), style=label_style)
        for cell, style, w in zip(cells[:shown], styles[:shown], cols, strict=False):
            t.append(" " * gap)
            text = _cut(cell, w, middle=False) if cuttable or len(cell) <= w else cell
            t.append(text.ljust(w), style=style)
        return t

    header = line(
        "",
        [_cut(n, w, middle=True) for n, w in zip(names, cols, strict=False)],
        [f"bold color({color(i)})" for i in range(len(names))],
        False,
    )
    notes: list[Text] = []
    if shown < len(names):
        notes.append(
            Text(
                f"+{fmt.plural(len(names) - shown, 'more run')} not shown: a wider terminal shows them",
                style="dim",
                no_wrap=True,
            )
        )
    if not spec and len(names) > 1:
        notes.append(
            Text(
                "no spec value differs between these runs"
                if any(r.spec for r in cmp.runs)
                else "no spec.toml to compare (runs started from Python)",
                style="dim",
                no_wrap=True,
            )
        )
    elif any(r.spec is None for r in cmp.runs):
        notes.append(Text("? no spec.toml (a run started from Python)", style="dim", no_wrap=True))
    body = [line(r.label, r.cells, r.styles, r.cuttable) for r in fixed]
    spec_lines = [line(r.label, r.cells, r.styles, r.cuttable, "") for r in spec]
    room = max(height, 2) - 1 - len(body) - len(notes)
    if room < len(spec_lines):
        notes = [n for n in notes if n.plain.startswith("+")]  # the "more runs" note outranks the others
        room = max(height, 2) - 1 - len(body) - len(notes)
        if room < len(spec_lines):
            keep = max(room - 1, 0)
            more = len(spec_lines) - keep
            spec_lines = spec_lines[:keep] + (
                [
                    Text(
                        f"… {fmt.plural(more, 'more differing key')} (a taller terminal shows them)",
                        style="dim",
                        no_wrap=True,
                    )
                ]
                if room > 0
                else []
            )
    if height < 1 + len(body):  # very short: the best of the metric first, then the state
        body = [body[2], body[0], body[1]][: max(height - 1, 1)]
    out = [header, *body, *spec_lines, *notes][: max(height, 1)]
    for t in out:
        t.truncate(width)
    return Text("\n").join(out)
