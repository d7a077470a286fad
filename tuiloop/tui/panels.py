"""The monitor's text panels as pure functions of the model (Rich text, no Textual).

Each function is given the width it may use and never returns a longer line, so the screen
stays clean at 80x24 and after a resize.
"""

from __future__ import annotations

import math
import textwrap
import time

from rich.text import Text

from tuiloop.engine import fmt
from tuiloop.rundir.series import reduce_to
from tuiloop.tui.model import LogEntry, MetricStat, MonitorModel

STATE_STYLE = {
    "starting": ("STARTING", "bold black on yellow"),
    "running": ("RUNNING", "bold black on green"),
    "paused": ("PAUSED", "bold black on yellow"),
    "stopping": ("STOPPING", "bold white on dark_orange3"),
    "completed": ("COMPLETED", "bold black on green"),
    "early_stopped": ("EARLY STOPPED", "bold black on cyan"),
    "stopped": ("STOPPED", "bold white on blue"),
    "suspended": ("SUSPENDED", "bold black on magenta"),
    "failed": ("FAILED", "bold white on red"),
    "forced": ("FORCED", "bold white on red"),
    "crashed": ("CRASHED", "bold white on red"),
}
LEVEL_STYLE = {
    "info": ("·", ""),
    "dim": ("·", "dim"),
    "save": ("✓", "cyan"),
    "best": ("★", "bold green"),
    "success": ("✓", "bold green"),
    "warning": ("!", "bold yellow"),
    "error": ("✗", "bold red"),
}
ENDED_STYLE = {
    "completed": "bold green",
    "early_stopped": "bold cyan",
    "stopped": "bold blue",
    "suspended": "bold magenta",
    "failed": "bold red",
    "forced": "bold red",
    "crashed": "bold red",
}
SPARKS = "▁▂▃▄▅▆▇█"


def _fit(pieces: list[Text], width: int, sep: str = "   ") -> Text:
    """Join pieces left to right while they fit; the rest are dropped whole (most important first)."""
    out = Text(no_wrap=True, overflow="ellipsis")
    for piece in pieces:
        extra = (len(sep) if out.plain else 0) + piece.cell_len
        if out.cell_len + extra > width:
            continue
        if out.plain:
            out.append(sep)
        out.append_text(piece)
    return out


def _left_truncate(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :] if width > 1 else text[:width]


def state_badge(model: MonitorModel) -> Text:
    label, style = STATE_STYLE.get(model.state, (model.state.upper(), "bold reverse"))
    return Text(f" {label} ", style=style)


def title_text(model: MonitorModel, width: int, read_only: bool = False) -> Text:
    """Run name, state, device: the top line."""
    s = model.started
    pieces = [Text("tuiloop", style="bold"), state_badge(model)]
    pieces.append(Text(model.run_name or "(waiting for the run to start)", style="bold"))
    if s is not None:
        processes = f" x{s.world_size} ({s.backend})" if s.world_size > 1 else ""
        pieces.append(Text(s.device_name + processes, style="magenta"))
        about = [f"{s.num_params:,} params"] if s.num_params else []
        about += [s.problem] if s.problem not in ("unknown", "other") else []
        if about:
            pieces.append(Text(" · ".join(about), style="dim"))
    if read_only:
        pieces.append(Text("read-only", style="bold italic"))
    return _fit(pieces, width, "  ")


def _bar(done: float, width: int, style: str = "green") -> Text:
    done = min(max(done, 0.0), 1.0)
    full = int(done * width)
    text = Text("━" * full, style=style)
    text.append("━" * (width - full), style="grey30")
    return text


def progress_text(model: MonitorModel, now: float, width: int) -> Text:
    """Epoch x/N with a bar, step in epoch, ETA, samples/s; then the run directory or the ending."""
    s = model.started
    lines = []
    if s is None:
        first = Text(
            f"starting: {model.phase}…" if model.phase else "waiting for the training process to start…", style="yellow"
        )
        if model.over:
            first = Text(model.state_reason or model.state, style="bold red")
    else:
        epoch = (min(model.epoch, s.epochs) if s.epochs else model.epoch) if not model.over else model.epochs_done
        spe = s.steps_per_epoch
        if s.epochs:
            frac = (
                model.epochs_done if model.over else model.epoch - 1 + (model.step_in_epoch / spe if spe else 0)
            ) / s.epochs
            pieces = [Text(f"epoch {epoch}/{s.epochs} ", style="bold") + _bar(frac, max(8, min(24, width // 6)))]
        else:  # a tracked loop that did not say how many epochs: no bar to fill
            pieces = [Text(f"epoch {epoch}", style="bold")]
        if model.phase and not model.over:
            pieces.append(Text(f"{model.phase}…", style="yellow"))
        if spe and not model.over:
            pieces.append(Text(f"step {model.step_in_epoch}/{spe}"))
        eta = model.eta(now)
        if model.state == "paused":
            pieces.append(Text("ETA (paused)", style="yellow"))
        elif eta is not None:
            pieces.append(Text(f"ETA {fmt.clock(eta)}"))
        if model.stop_after_epoch and not model.over:
            pieces.append(Text(f"stops after epoch {model.epoch}", style="bold magenta"))
        if model.samples_per_s is not None and not model.over:
            pieces.append(Text(f"{model.samples_per_s:,.0f} samples/s"))
        wall = model.wall_time(now)
        if wall is not None:  # training time leaves out pauses and start-up; wall time does not
            pieces.append(Text(f"train {fmt.clock(model.training_time(now))} · wall {fmt.clock(wall)}", style="dim"))
        pieces.append(Text(f"global step {model.step:,}", style="dim"))
        first = _fit(pieces, width)
    lines.append(first)
    lines.append(status_line(model, width))
    return Text("\n").join(lines)


def status_line(model: MonitorModel, width: int) -> Text:
    """Second progress line: how the run ended and how to leave, or where its directory is."""
    if model.over:
        label = STATE_STYLE.get(model.state, (model.state,))[0].lower()
        hint = Text("  (q: leave)", style="dim")
        text = Text(
            f"{label}" + (f" ({model.state_reason})" if model.state_reason else ""),
            style=ENDED_STYLE.get(model.state, "bold"),
        )
        text.truncate(max(width - hint.cell_len, 1), overflow="ellipsis")
        return text + hint
    where = _left_truncate(model.run_dir or "", max(width - 9, 10))
    return Text.assemble(("run dir ", "dim"), (where, ""), no_wrap=True)


def sparkline(values: list[float], width: int, lo: float | None = None, hi: float | None = None) -> str:
    """Block characters for the last ``width`` values (low to high; ``lo``/``hi`` fix the scale)."""
    values = [v for v in values[-width:] if v == v]
    if not values:
        return ""
    lo = min(values) if lo is None else lo
    hi = max(values) if hi is None else hi
    values = [min(max(v, lo), hi) for v in values]
    span = hi - lo or 1.0
    return "".join(SPARKS[min(int((v - lo) / span * (len(SPARKS) - 1) + 0.5), len(SPARKS) - 1)] for v in values)


def health_text(model: MonitorModel, width: int) -> Text:
    """Training health under the loss plot: gradient norm, loss scale and skipped steps, throughput,
    each with its recent history as a sparkline."""
    rows: list[tuple[str, str, list[float]]] = []
    if model.grad_norms.last is not None:
        rows.append(("grad norm", fmt.value(model.grad_norms.last[1]), model.grad_norms.points()[1]))
    if model.loss_scale is not None:
        rows.append(
            (
                "loss scale",
                f"{model.loss_scale:g}  {fmt.plural(model.skipped_steps, 'skipped step')}",
                model.loss_scales.points()[1],
            )
        )
    if model.samples_per_s is not None:
        rows.append(("samples/s", f"{model.samples_per_s:,.0f}", model.throughput.points()[1]))
    lines = []
    for name, value, history in rows:
        line = Text(f"{name:<10} ", style="dim")
        line.append(f"{value:>9}", style="bold")
        room = width - line.cell_len - 1
        if history and room >= 5:
            line.append(" " + sparkline(history, room), style="cyan")
        line.truncate(width, overflow="ellipsis")
        lines.append(line)
    return Text("\n").join(lines)


def metrics_text(model: MonitorModel, width: int) -> Text:
    """One row per metric: name, last value, best value and its epoch, a sparkline if room."""
    if not model.metrics:
        return Text("no validation yet", style="dim")
    name_w = max(len(n) for n in model.metrics) + 1
    values = [
        (fmt.value(stat.last), fmt.value(stat.best), "" if stat.best_epoch is None else str(stat.best_epoch))
        for stat in model.metrics.values()
    ]
    val_w = max(8, *(len(v) for row in values for v in row[:2]))
    ep_w = max(2, *(len(row[2]) for row in values))
    # numbers are never cut: the sparkline goes first, then the epoch, then the names shrink, then "best"
    show_best = width >= 4 + val_w * 2 + 2
    fixed = (val_w + 1) * (2 if show_best else 1)
    show_ep = show_best and width >= name_w + fixed + ep_w + 1
    spark_w = width - (name_w + fixed + (ep_w + 1 if show_ep else 0))
    name_w = min(name_w, max(width - fixed - (ep_w + 1 if show_ep else 0), 1))
    header = Text(
        f"{'':<{name_w}}{'last':>{val_w}}"
        + (f" {'best':>{val_w}}" if show_best else "")
        + (f" {'ep':>{ep_w}}" if show_ep else ""),
        style="dim",
    )
    rows = [header]
    monitor = model.started.monitor if model.started else None
    for (name, stat), (last, best, ep) in zip(model.metrics.items(), values, strict=True):
        row = Text(f"{name[:name_w]:<{name_w}}", style="bold" if name == monitor else "")
        row.append(f"{last:>{val_w}}")
        just_best = stat.last is not None and stat.best == stat.last
        if show_best:
            row.append(f" {best:>{val_w}}", style="green" if just_best else "")
        if show_ep:
            row.append(f" {ep:>{ep_w}}", style="dim")
        if spark_w >= 6:
            row.append(" ")
            row.append_text(best_sparkline(stat, spark_w - 2))
        rows.append(row)
    return Text("\n").join(rows)


def best_sparkline(stat: MetricStat, width: int) -> Text:
    """The metric's whole history as a sparkline, the cell that holds its best check in green
    (the best marker of a metric that is not a loss: the loss plot marks only val_loss or
    train_loss)."""
    xs, ys = stat.history.points()
    per_cell = math.ceil(len(xs) / width) if len(xs) > width else 1
    text = Text(sparkline(reduce_to(xs, ys, width)[1], width), style="cyan")
    if stat.best_epoch is not None and xs:
        nearest = min(range(len(xs)), key=lambda i: abs(xs[i] - stat.best_epoch))  # type: ignore[operator]
        at = nearest // per_cell
        text.stylize("bold green", at, at + 1)
    return text


def early_stop_text(model: MonitorModel, width: int) -> Text:
    """Monitored metric, best, counter used/patience as a bar; a clear mark once it triggers."""
    s, es = model.started, model.early
    if s is None or s.patience is None:
        return Text.assemble("off ", ("(no [early_stopping])", "dim"))
    patience = es.patience if es else s.patience
    counter = es.counter if es else 0
    head = _fit(
        [
            Text(f"{es.monitor if es else s.monitor} ({s.mode})", style="bold"),
            Text(f"best {fmt.value(es.best if es else None)}"),
        ],
        width,
        "  ",
    )
    style = "red" if counter >= patience else "yellow" if counter * 2 >= patience else "green"
    count = Text(f"{counter}/{patience}", style="bold " + style)  # never cut: the bar gives way
    cells = max(min(patience, width - count.cell_len - 1), 0)
    used = round(cells * counter / max(patience, 1))
    bar = Text("█" * used, style=style)
    bar.append("░" * (cells - used), style="grey30")
    bar = bar + Text(" ") + count if cells else count
    lines = [head, bar]
    if es is not None and es.triggered:
        lines.append(Text("■ TRIGGERED: training stopped"[:width], style="bold white on red"))
    return Text("\n").join(lines)


def lr_text(model: MonitorModel, width: int) -> Text:
    if model.lr is None:
        return Text("lr -", style="dim")
    text = Text("lr ", style="dim")
    text.append(f"{model.lr:.4g}", style="bold magenta")
    return text


def log_line(entry: LogEntry) -> Text:
    """One entry of the log pane, styled by severity (the pane folds it to its width)."""
    mark, style = LEVEL_STYLE.get(entry.level, ("·", ""))
    line = Text(time.strftime("%H:%M:%S ", time.localtime(entry.time)), style="dim")
    line.append(f"{mark} ", style=style or "dim")
    line.append(entry.text, style=style)
    if entry.repeat > 1:
        line.append(f"  (x{entry.repeat})", style="dim")
    return line


def log_since(model: MonitorModel, index: int) -> tuple[int, list[Text]]:
    """The log entries from number ``index`` on (or from the oldest one kept), and that number."""
    first = max(index, model.log_count - len(model.log))
    return first, [log_line(e) for e in list(model.log)[first - (model.log_count - len(model.log)) :]]


def epoch_table(model: MonitorModel) -> tuple[list[str], list[list[str]]]:
    """Every validation as a row: epoch, step, wall time since the start, each metric (best marked)."""
    names = list(model.metrics)
    columns = ["epoch", "step", "wall", *names, "best"]
    start = model.first_event_time or 0.0
    rows = []
    for v in model.epoch_rows:
        cells = [str(v.epoch), f"{v.step:,}", fmt.clock(max(v.time - start, 0.0))]
        cells += [fmt.value(v.metrics[n]) if n in v.metrics else "" for n in names]
        cells.append("★" if v.is_best else "")
        rows.append(cells)
    return columns, rows


def _fit_ranked(pieces: list[tuple[int, Text]], width: int, sep: str = "  ") -> Text:
    """Like :func:`_fit`, but pieces are taken by rank (0 first) until one does not fit, and shown in list order."""
    keep = _by_rank([(rank, piece.cell_len) for rank, piece in pieces], width, len(sep))
    out = Text(no_wrap=True, overflow="ellipsis")
    for i, (_, piece) in enumerate(pieces):
        if i in keep:
            if out.plain:
                out.append(sep)
            out.append_text(piece)
    return out


def _by_rank(sizes: list[tuple[int, int]], width: int, sep: int) -> set[int]:
    """Which of (rank, width) fit in ``width``: by rank, stopping at the first that does not."""
    keep: set[int] = set()
    used = 0
    for _, i in sorted((rank, i) for i, (rank, _) in enumerate(sizes)):
        extra = sizes[i][1] + (sep if keep else 0)
        if used + extra > width:
            break
        keep.add(i)
        used += extra
    return keep


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.1f}"


def _level(value: float | None, warn: float, bad: float) -> str:
    return "" if value is None else "bold red" if value >= bad else "yellow" if value >= warn else ""


_GPU_RIGHT = {2, 3, 5, 6}  # the columns of _gpu_cells aligned right: utilisation, memory, temperature, power


def _gpu_cells(g: dict, peak: int) -> list[tuple[int, Text]]:
    """One GPU's pieces as (rank, text), in the order shown; rank 0 is dropped last."""
    util, used, total, temp, power = (
        g.get("util"),
        g.get("mem_used"),
        g.get("mem_total"),
        g.get("temp"),
        g.get("power_w"),
    )
    full = used / total if used is not None and total else None
    return [
        (0, Text(f"GPU{g['index']}", style="bold")),
        (6, Text((g.get("name") or "").split(" ")[0], style="magenta")),
        (1, Text("-" if util is None else f"{util}%", style="bold")),
        (2, Text(f"{_gib(used)}/{_gib(total)} GiB", style=_level(full, 0.9, 0.97))),
        (5, Text(f"peak {_gib(peak)}" if peak else "", style="dim")),
        (3, Text("-°C" if temp is None else f"{temp}°C", style=_level(temp, 80, 88))),
        (4, Text("- W" if power is None else f"{power:.0f} W")),
    ]


def system_text(model: MonitorModel, width: int) -> Text:
    """The machine's load: one line per GPU (utilisation, memory and its peak, temperature, power,
    a utilisation sparkline), torch's peak memory on CUDA, then CPU, RAM and the process's RSS.

    The GPU lines are columns, the same on every line. Narrow, the least important pieces go
    first (name, peaks, power, temperature, ...); numbers are never cut.
    """
    s = model.system
    if s is None:  # the first sample comes one interval (2 s) after the start
        said = "no sample: the run ended before the first" if model.over else "waiting for the first sample"
        return Text(said[: max(width, 0)], style="dim")
    lines = []
    rows = [_gpu_cells(g, model.gpus[g["index"]].mem_peak if g["index"] in model.gpus else 0) for g in s.gpus]
    if rows:
        widths = [max(row[c][1].cell_len for row in rows) for c in range(len(rows[0]))]
        columns = [c for c, w in enumerate(widths) if w]  # a column empty on every line takes no room
        keep = _by_rank([(rows[0][c][0], widths[c]) for c in columns], width, 2)
        shown = [c for k, c in enumerate(columns) if k in keep]
        for g, row in zip(s.gpus, rows, strict=True):
            cells = []
            for c in shown:
                pad = Text(" " * (widths[c] - row[c][1].cell_len))
                cells.append(pad + row[c][1] if c in _GPU_RIGHT else row[c][1] + pad)
            line = Text("  ", no_wrap=True, overflow="ellipsis").join(cells)
            stat = model.gpus.get(g["index"])
            room = width - line.cell_len - 2
            if stat is not None and room >= 5:
                line.append("  " + sparkline(stat.util.points()[1], min(room, 32), 0.0, 100.0), style="cyan")
            lines.append(line)
    if model.torch_peak is not None:
        lines.append(
            _fit_ranked(
                [(1, Text("torch peak", style="dim")), (0, Text(f"{_gib(model.torch_peak)} GiB", style="bold"))],
                width,
                " ",
            )
        )
    cpu = [
        (0, Text.assemble(("CPU ", "dim"), (f"{s.cpu_percent:.0f}%", "bold"))),
        (4, Text.assemble(("proc ", "dim"), f"{s.proc_cpu:.0f}%") if s.proc_cpu is not None else Text("")),
        (2, Text.assemble(("RAM ", "dim"), f"{_gib(s.ram_used)}/{_gib(s.ram_total)} GiB")),
        (1, Text.assemble(("RSS ", "dim"), f"{_gib(s.rss)} GiB")),
        (3, Text(f"peak {_gib(model.rss_peak)}", style="dim")),
    ]
    line = _fit_ranked([p for p in cpu if p[1].plain], width)
    room = width - line.cell_len - 2
    if room >= 5:
        line.append("  " + sparkline(model.cpu_history.points()[1], min(room, 32), 0.0, 100.0), style="cyan")
    lines.append(line)
    for line in lines:
        line.truncate(max(width, 0), overflow="ellipsis")  # narrower than the first piece: cut, never wider
    return Text("\n").join(lines)


def keys_text(keys: list[tuple[str, str]], width: int) -> Text:
    """The key bar: ``key label`` pairs in order while they fit."""
    out = Text(no_wrap=True)
    for key, label in keys:
        piece = Text.assemble((key, "bold reverse"), f" {label}  ")
        if out.cell_len + piece.cell_len > width:
            break
        out.append_text(piece)
    return out


def error_text(model: MonitorModel, width: int, max_lines: int = 8) -> Text:
    """The failure: what, where, and the user's frames of the traceback."""
    f = model.failure
    if f is None:
        text = model.state_reason if model.state == "crashed" else model.last_error or ""
        return Text("\n").join(
            Text(ln, style="bold red") for ln in (textwrap.wrap(text, max(width, 10)) or [""])[: max(max_lines, 1)]
        )
    wrapped = textwrap.wrap(f.error, max(width, 10)) or [""]
    lines = [Text(ln, style="bold red") for ln in wrapped[: max(max_lines - 1, 1)]]
    lines.append(Text.assemble(("where ", "dim"), (f.where, "yellow")))
    room = max(max_lines - len(lines), 0)
    frames = f.user_frames[-room:] if room else []  # the engine picked the frames in the user's code
    lines += [Text(ln, style="dim") for ln in frames]
    for ln in lines:
        ln.truncate(width, overflow="ellipsis")
    return Text("\n").join(lines)
