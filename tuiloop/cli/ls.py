"""``tuiloop ls``: the runs under a folder as a table that fits the terminal."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from tuiloop.cli.say import error
from tuiloop.engine import fmt
from tuiloop.engine.exits import EXIT_USAGE
from tuiloop.rundir.catalog import RunRow, list_runs

STATES = (
    "running",
    "paused",
    "stalled",
    "finished",
    "early_stopped",
    "stopped",
    "suspended",
    "failed",
    "forced",
    "crashed",
)


def cmd_ls(args: argparse.Namespace) -> int:
    """Print the runs under OUT_DIR; on a terminal the table fits its width, piped names stay whole."""
    out_dir: Path = args.out_dir
    if not out_dir.is_dir():
        error(f"no runs directory {out_dir} (runs go to [run] out_dir, default ./runs)")
        return EXIT_USAGE
    wanted = _states(args.state)
    if wanted is None:
        error(f"--state {args.state}: use one or more of {', '.join(STATES)} (comma-separated)")
        return EXIT_USAGE
    listing = list_runs(out_dir)
    rows = listing.rows
    hidden = [] if args.all or args.state else [r for r in rows if failed_at_setup(r)]
    rows = [r for r in rows if r not in hidden and (not wanted or r.state in wanted)]
    if args.json:
        print(json.dumps([row_object(r) for r in rows], indent=2))
    elif not rows:
        print(f"no {' or '.join(sorted(wanted))} runs in {out_dir}" if wanted else f"no runs in {out_dir}")
    else:
        width = shutil.get_terminal_size((80, 24)).columns if sys.stdout.isatty() else None
        print(format_table(rows, width))
    if hidden and not args.json:
        print(
            f"({fmt.plural(len(hidden), 'run')} that failed at setup hidden; --all shows {'it' if len(hidden) == 1 else 'them'})"
        )
    tell_skipped(rows, listing.unreadable)
    return 0


def tell_skipped(rows: list[RunRow], unreadable: list[Path]) -> None:
    """On stderr: the runs with files that could not be read in full (what was skipped of them),
    and the folders this user may not read."""
    damaged = [r for r in rows if r.problems]
    if damaged:
        first = "; ".join(f"{r.name}: {r.problems[0]}" for r in damaged[:3])
        print(
            f"tuiloop: warning: {fmt.plural(len(damaged), 'run')} with files that could not be read in full, shown without what was skipped ({first}{'; ...' if len(damaged) > 3 else ''}); `tuiloop show RUN` says more",
            file=sys.stderr,
        )
    if unreadable:
        names = ", ".join(p.name for p in unreadable[:3])
        print(
            f"tuiloop: warning: {fmt.plural(len(unreadable), 'folder')} you may not read skipped ({names}{', ...' if len(unreadable) > 3 else ''}): other users' runs are private to them",
            file=sys.stderr,
        )


def row_object(row: RunRow) -> dict[str, object]:
    """One run of ``ls --json``: the table's columns, whole (docs/commands.md lists the fields)."""
    return {
        "run_dir": os.path.abspath(row.path),
        "name": row.name,
        "state": row.state,
        "epochs_done": row.epochs_done,
        "epochs": row.epochs,
        "monitor": row.monitor,
        "best": row.best,
        "best_epoch": row.best_epoch,
        "duration_s": row.duration_s,
        "started": row.started,
        "steps": row.steps,
    }


def _states(text: str | None) -> set[str] | None:
    if not text:
        return set()
    names = {s.strip() for s in text.split(",") if s.strip()}
    return names if names and names <= set(STATES) else None


def failed_at_setup(row: RunRow) -> bool:
    """A run that failed before training (a spec or data mistake): clutter once fixed."""
    return row.state == "failed" and not row.epochs_done and not row.steps


def _cells(row: RunRow, with_monitor: bool, long_date: bool) -> list[str]:
    epochs = (
        f"{row.epochs_done if row.epochs_done is not None else '?'}/{row.epochs if row.epochs is not None else '?'}"
    )
    if row.best is None:
        best = "-"
    else:
        at = f" @{row.best_epoch}" if row.best_epoch is not None else ""
        best = (f"{row.monitor} " if with_monitor and row.monitor else "") + fmt.value(row.best) + at
    started = time.strftime("%Y-%m-%d %H:%M" if long_date else "%m-%d %H:%M", time.localtime(row.started))
    return [row.name, row.state, epochs, best, fmt.duration(row.duration_s), started]


def _shorten(name: str, width: int) -> str:
    """Cut the middle of a name, keeping its unique tail (``attach``/``show`` accept any unique part)."""
    if len(name) <= width:
        return name
    if width <= 5:
        return name[:width]
    tail = min(len(name) // 2, max(4, (width - 1) // 2))
    return name[: width - 1 - tail] + "~" + name[-tail:]  # ASCII: ls output often lands in logs


def format_table(rows: list[RunRow], width: int | None = 80) -> str:
    """The runs as a plain-text table no wider than ``width`` (names shortened if needed); ``None``: no limit."""
    monitors = {r.monitor for r in rows if r.best is not None}
    one_monitor = len(monitors) == 1
    best_header = f"BEST {next(iter(monitors))}" if one_monitor else "BEST"
    header = ["RUN", "STATE", "EPOCHS", best_header, "TIME", "STARTED"]
    # Try the roomiest layout first, then give up the year, then gaps, then name characters.
    for long_date, gap in ((True, 2), (False, 2), (False, 1)):
        table = [header] + [_cells(r, not one_monitor, long_date) for r in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        if width is None or sum(widths) + gap * (len(widths) - 1) <= width:
            break
    if width is not None:
        room = width - sum(widths[1:]) - gap * (len(widths) - 1)
        widths[0] = max(min(widths[0], room), 8)
    lines = []
    for line in table:
        cells = [_shorten(line[0], widths[0])] + line[1:]
        text = (" " * gap).join(
            c.ljust(w) if i < len(cells) - 1 else c for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        lines.append(text.rstrip())
    return "\n".join(lines)
