"""The monitor's text panels as pure functions of the model (Rich text, no Textual).

Each function is given the width it may use and never returns a longer line, so the screen
stays clean at 80x24 and after a resize.
"""

from __future__ import annotations

import textwrap
import time

from rich.text import Text

from tuiloop.engine import fmt
from tuiloop.tui.model import MonitorModel

STATE_STYLE = {
    "starting": ("STARTING", "bold black on yellow"),
    "running": ("RUNNING", "bold black on green"),
    "paused": ("PAUSED", "bold black on yellow"),
    "stopping": ("STOPPING", "bold white on dark_orange3"),
    "completed": ("COMPLETED", "bold black on green"),
    "early_stopped": ("EARLY STOPPED", "bold black on cyan"),
    "stopped": ("STOPPED", "bold white on blue"),
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
ENDED_STYLE = {"completed": "bold green", "early_stopped": "bold cyan", "stopped": "bold blue", "failed": "bold red", "forced": "bold red", "crashed": "bold red"}
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
        device = s.device_name + processes + (f"  {model.gpu_memory}" if model.gpu_memory else "")
        pieces.append(Text(device, style="magenta"))
        problem = f" · {s.problem}" if s.problem != "unknown" else ""
        pieces.append(Text(f"{s.num_params:,} params{problem}", style="dim"))
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
        first = Text(f"starting: {model.phase}…" if model.phase else "waiting for the training process to start…", style="yellow")
        if model.over:
            first = Text(model.state_reason or model.state, style="bold red")
    else:
        epoch = min(model.epoch, s.epochs) if not model.over else model.epochs_done
        spe = s.steps_per_epoch
        frac = (model.epochs_done if model.over else model.epoch - 1 + (model.step_in_epoch / spe if spe else 0)) / max(s.epochs, 1)
        label = Text(f"epoch {epoch}/{s.epochs} ", style="bold")
        pieces = [label + _bar(frac, max(8, min(24, width // 6)))]
        if model.phase and not model.over:
            pieces.append(Text(f"{model.phase}…", style="yellow"))
        if spe and not model.over:
            pieces.append(Text(f"step {model.step_in_epoch}/{spe}"))
        eta = model.eta(now)
        if model.state == "paused":
            pieces.append(Text("ETA (paused)", style="yellow"))
        elif eta is not None:
            pieces.append(Text(f"ETA {fmt.clock(eta)}"))
        if model.samples_per_s is not None and not model.over:
            pieces.append(Text(f"{model.samples_per_s:,.0f} samples/s"))
        elapsed = model.elapsed(now)
        if elapsed is not None:
            pieces.append(Text(f"elapsed {fmt.clock(elapsed)}", style="dim"))
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
        text = Text(f"{label}" + (f" ({model.state_reason})" if model.state_reason else ""), style=ENDED_STYLE.get(model.state, "bold"))
        text.truncate(max(width - hint.cell_len, 1), overflow="ellipsis")
        return text + hint
    where = _left_truncate(model.run_dir or "", max(width - 9, 10))
    return Text.assemble(("run dir ", "dim"), (where, ""), no_wrap=True)


def sparkline(values: list[float], width: int) -> str:
    """Block characters for the last ``width`` values (low to high)."""
    values = [v for v in values[-width:] if v == v]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    return "".join(SPARKS[min(int((v - lo) / span * (len(SPARKS) - 1) + 0.5), len(SPARKS) - 1)] for v in values)


def health_text(model: MonitorModel, width: int) -> Text:
    """Training health under the loss plot: gradient norm, loss scale and skipped steps, throughput,
    each with its recent history as a sparkline."""
    rows: list[tuple[str, str, list[float]]] = []
    if model.grad_norms.last is not None:
        rows.append(("grad norm", fmt.value(model.grad_norms.last[1]), model.grad_norms.points()[1]))
    if model.loss_scale is not None:
        rows.append(("loss scale", f"{model.loss_scale:g}  {fmt.plural(model.skipped_steps, 'skipped step')}", []))
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
    rows = [Text(f"{'':<{name_w}}{'last':>8} {'best':>8} {'ep':>4}", style="dim")]
    spark_w = width - (name_w + 22)
    monitor = model.started.monitor if model.started else None
    for name, stat in model.metrics.items():
        row = Text(f"{name:<{name_w}}", style="bold" if name == monitor else "")
        row.append(f"{fmt.value(stat.last):>8} ")
        just_best = stat.last is not None and stat.best == stat.last
        row.append(f"{fmt.value(stat.best):>8}", style="green" if just_best else "")
        row.append(f" {stat.best_epoch:>4}" if stat.best_epoch is not None else "     ", style="dim")
        if spark_w >= 5:
            row.append(" " + sparkline(stat.history.points()[1], spark_w - 1), style="cyan")
        rows.append(row)
    for row in rows:
        row.truncate(width, overflow="ellipsis")
    return Text("\n").join(rows)


def early_stop_text(model: MonitorModel, width: int) -> Text:
    """Monitored metric, best, counter used/patience as a bar; a clear mark once it triggers."""
    s, es = model.started, model.early
    if s is None or s.patience is None:
        return Text.assemble("off ", ("(no [early_stopping])", "dim"))
    patience = es.patience if es else s.patience
    counter = es.counter if es else 0
    head = Text(f"{es.monitor if es else s.monitor} ({s.mode})", style="bold")
    head.append(f"  best {fmt.value(es.best if es else None)}")
    head.truncate(width, overflow="ellipsis")
    cells = max(min(patience, width - 10), 1)
    used = round(cells * counter / max(patience, 1))
    style = "red" if counter >= patience else "yellow" if counter * 2 >= patience else "green"
    bar = Text("█" * used, style=style)
    bar.append("░" * (cells - used), style="grey30")
    bar.append(f" {counter}/{patience}", style="bold " + style)
    bar.truncate(width, overflow="ellipsis")
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


def log_text(model: MonitorModel, height: int, width: int) -> Text:
    """The newest ``height`` log entries, newest last, styled by severity."""
    entries = list(model.log)[-max(height, 1) :]
    lines = []
    for e in entries:
        mark, style = LEVEL_STYLE.get(e.level, ("·", ""))
        line = Text(time.strftime("%H:%M:%S ", time.localtime(e.time)), style="dim")
        line.append(f"{mark} ", style=style or "dim")
        line.append(e.text, style=style)
        if e.repeat > 1:
            line.append(f"  (x{e.repeat})", style="dim")
        line.truncate(width, overflow="ellipsis")
        lines.append(line)
    return Text("\n").join(lines) if lines else Text("")


def error_text(model: MonitorModel, width: int, max_lines: int = 8) -> Text:
    """The failure: what, where, and the user's frames of the traceback."""
    f = model.failure
    if f is None:
        text = model.state_reason if model.state == "crashed" else model.last_error or ""
        return Text("\n").join(Text(ln, style="bold red") for ln in (textwrap.wrap(text, max(width, 10)) or [""])[: max(max_lines, 1)])
    wrapped = textwrap.wrap(f.error, max(width, 10)) or [""]
    lines = [Text(ln, style="bold red") for ln in wrapped[: max(max_lines - 1, 1)]]
    lines.append(Text.assemble(("where ", "dim"), (f.where, "yellow")))
    room = max(max_lines - len(lines), 0)
    frames = f.user_frames[-room:] if room else []  # the engine picked the frames in the user's code
    lines += [Text(ln, style="dim") for ln in frames]
    for ln in lines:
        ln.truncate(width, overflow="ellipsis")
    return Text("\n").join(lines)
