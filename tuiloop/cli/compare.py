"""``tuiloop compare RUN RUN ...``: several runs on one screen; without a terminal, a plain table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tuiloop.cli.say import error, some
from tuiloop.engine import fmt
from tuiloop.engine.exits import EXIT_USAGE
from tuiloop.rundir.catalog import RunNotFound, resolve_run
from tuiloop.rundir.comparison import Comparison


def cmd_compare(args: argparse.Namespace) -> int:
    """Open the compare screen on the runs named; piped, print the table instead."""
    if len(args.runs) < 2:
        error(
            f"compare needs two or more runs, got one ({args.runs[0]}); `tuiloop show {args.runs[0]}` opens a single run, `tuiloop ls` lists them"
        )
        return EXIT_USAGE
    try:
        run_dirs = [resolve_run(text, args.out_dir) for text in args.runs]
    except RunNotFound as e:
        error(str(e))
        return EXIT_USAGE
    seen: dict[Path, str] = {}
    for text, path in zip(args.runs, run_dirs, strict=True):
        if path in seen:
            error(f"{seen[path]!r} and {text!r} are the same run ({path.name}); name each run once")
            return EXIT_USAGE
        seen[path] = text
    cmp = Comparison(run_dirs)
    metric = args.metric or cmp.default_metric()
    names = cmp.metric_names()
    if args.metric and args.metric not in names and not cmp.any_live:
        known = ", ".join(names) if names else "none: no run has validated yet"
        error(f"--metric {args.metric}: no run has validated it (their metrics: {known})")
        return EXIT_USAGE
    for run in cmp.runs:  # what could not be read is said, not dropped silently
        if run.skipped or run.problems:
            lines = (
                [f"skipped {fmt.plural(run.skipped, 'line')} of events.jsonl ({'; '.join(run.skipped_why)})"]
                if run.skipped
                else []
            )
            print(f"tuiloop: warning: {run.path}: {some(lines + run.problems)}", file=sys.stderr)
    if not sys.stdout.isatty():
        print(format_plain(cmp, metric))
        return 0
    from tuiloop.tui.compare_app import CompareApp  # lazy: keeps textual out of the piped table

    app = CompareApp(cmp, metric)
    app.run()
    return app.return_code or 0


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def format_plain(cmp: Comparison, metric: str) -> str:
    """The runs (whole names, state, epochs, best ``metric`` and its epoch), then the spec values
    that differ, one key a line, a column per run under its short name."""
    rows = [["RUN", "STATE", "EPOCHS", f"BEST {metric}"]]
    for run in cmp.runs:
        best = cmp.best(run, metric)
        epochs = f"{run.epochs_done}/{run.epochs if run.epochs is not None else '?'}"
        rows.append([run.name, run.shown_state, epochs, "-" if best is None else f"{fmt.value(best[1])} @{best[0]}"])
    lines = _table(rows)
    differing = cmp.differing()
    lines.append("")
    if differing:
        lines += _table([["SPEC", *cmp.names], *[[key, *values] for key, values in differing]])
    elif any(r.spec is not None for r in cmp.runs):
        lines.append("no spec value differs between these runs")
    missing = [r.name for r in cmp.runs if r.spec is None]
    if missing:
        lines.append(f"no spec.toml (started from Python): {', '.join(missing)}")
    return "\n".join(lines)
