"""The log pane's lines and the error pane: what happened, by severity, and what failed where."""

from __future__ import annotations

import textwrap
import time

from rich.text import Text

from tuiloop.tui.model import LogEntry, MonitorModel

LEVEL_STYLE = {
    "info": ("·", ""),
    "dim": ("·", "dim"),
    "save": ("✓", "cyan"),
    "best": ("★", "bold green"),
    "success": ("✓", "bold green"),
    "warning": ("!", "bold yellow"),
    "error": ("✗", "bold red"),
}


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
