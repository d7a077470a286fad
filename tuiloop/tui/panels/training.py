"""The panels about the training itself: metrics, early stopping, the learning rate, training
health under the loss plot, and every validation as a table (the ``t`` screen)."""

from __future__ import annotations

import math

from rich.text import Text

from tuiloop.engine import fmt
from tuiloop.rundir.series import reduce_to
from tuiloop.tui.model import MetricStat, MonitorModel
from tuiloop.tui.panels.fit import fit, sparkline


def metrics_text(model: MonitorModel, width: int) -> Text:
    """One row per metric: name, last value, best value and its epoch, the test split's value
    once the run has evaluated it (beside the val_ metric it matches), a sparkline if room."""
    if not model.metrics:
        return Text("no validation yet", style="dim")
    tested = model.tested.metrics if model.tested is not None else {}
    tests = {n: tested.get("test_" + n.removeprefix("val_")) if n.startswith("val_") else None for n in model.metrics}
    name_w = max(len(n) for n in model.metrics) + 1
    values = [
        (fmt.value(stat.last), fmt.value(stat.best), "" if stat.best_epoch is None else str(stat.best_epoch))
        for stat in model.metrics.values()
    ]
    val_w = max(8, *(len(v) for row in values for v in row[:2]))
    ep_w = max(2, *(len(row[2]) for row in values))
    # numbers are never cut: the sparkline goes first, then the epoch, then the names shrink, then "best"
    show_best = width >= 4 + val_w * 2 + 2
    show_test = bool(tested) and width >= 4 + val_w * (3 if show_best else 2) + 3
    fixed = (val_w + 1) * ((2 if show_best else 1) + (1 if show_test else 0))
    show_ep = show_best and width >= name_w + fixed + ep_w + 1
    spark_w = width - (name_w + fixed + (ep_w + 1 if show_ep else 0))
    name_w = min(name_w, max(width - fixed - (ep_w + 1 if show_ep else 0), 1))
    header = Text(
        f"{'':<{name_w}}{'last':>{val_w}}"
        + (f" {'best':>{val_w}}" if show_best else "")
        + (f" {'ep':>{ep_w}}" if show_ep else "")
        + (f" {'test':>{val_w}}" if show_test else ""),
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
        if show_test:
            test = tests[name]
            row.append(f" {'' if test is None else fmt.value(test):>{val_w}}", style="bold")
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
    best = stat.best_epoch
    if best is not None and xs:
        nearest = min(range(len(xs)), key=lambda i: abs(xs[i] - best))
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
    head = fit(
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
    if model.tokens_per_s is not None:
        rows.append(("tokens/s", f"{model.tokens_per_s:,.0f}", []))
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
