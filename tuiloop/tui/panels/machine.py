"""The system pane: each GPU, torch's peak memory, the CPU, RAM and the training process."""

from __future__ import annotations

from rich.text import Text

from tuiloop.tui.model import MonitorModel
from tuiloop.tui.panels.fit import by_rank, fit_ranked, sparkline


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
        keep = by_rank([(rows[0][c][0], widths[c]) for c in columns], width, 2)
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
            fit_ranked(
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
    line = fit_ranked([p for p in cpu if p[1].plain], width)
    room = width - line.cell_len - 2
    if room >= 5:
        line.append("  " + sparkline(model.cpu_history.points()[1], min(room, 32), 0.0, 100.0), style="cyan")
    lines.append(line)
    for line in lines:
        line.truncate(max(width, 0), overflow="ellipsis")  # narrower than the first piece: cut, never wider
    return Text("\n").join(lines)
