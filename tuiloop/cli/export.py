"""``tuiloop export``: a run's steps and validations as CSV, or as TensorBoard event files.

Works on finished, crashed and live runs alike: it exports what the event log holds so far.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tuiloop.cli.say import error
from tuiloop.engine.exits import EXIT_USAGE
from tuiloop.rundir.catalog import RunNotFound, resolve_run
from tuiloop.rundir.history import (
    CSV_FILE,
    TENSORBOARD_DIR,
    History,
    TensorBoardXMissing,
    other_event_files,
    read_history,
    write_csv,
    write_tensorboard,
)
from tuiloop.rundir.layout import EVENTS
from tuiloop.spec.errors import did_you_mean

FORMATS = ("csv", "tensorboard")


def cmd_export(args: argparse.Namespace) -> int:
    """Export one run in the format asked for."""
    if args.format not in FORMATS:
        error(
            f"unknown export format {args.format!r}: use --format csv or --format tensorboard. {did_you_mean(args.format, FORMATS)}".strip()
        )
        return EXIT_USAGE
    try:
        run_dir = resolve_run(args.run, args.out_dir)
    except RunNotFound as e:
        error(str(e))
        return EXIT_USAGE
    if args.format == "tensorboard" and args.output == "-":
        error("TensorBoard event files go into a folder: give -o a folder (or leave it out for RUN_DIR/tensorboard)")
        return EXIT_USAGE
    h, tail = read_history(run_dir)
    if tail.skipped:
        print(
            f"tuiloop: warning: skipped {tail.skipped} line(s) of {run_dir / EVENTS} this version cannot read: {'; '.join(tail.problems[:3])}",
            file=sys.stderr,
        )
    if args.format == "csv":
        return _csv(h, run_dir, args.output)
    return _tensorboard(h, run_dir, args.output)


def _csv(h: History, run_dir: Path, output: str | None) -> int:
    if output == "-":
        write_csv(h, sys.stdout)
        return 0
    path = Path(output).expanduser() if output else run_dir / CSV_FILE
    try:
        with open(path, "w", encoding="utf-8", newline="") as f:
            rows = write_csv(h, f)
    except OSError as e:
        error(f"cannot write {path}: {e.strerror or e}")
        return EXIT_USAGE
    print(f"wrote {rows} rows ({len(h.steps)} steps, {len(h.validations)} validations{_test(h)}) to {path}")
    return 0


def _test(h: History) -> str:
    return ", the test split" if h.test is not None else ""


def _tensorboard(h: History, run_dir: Path, output: str | None) -> int:
    logdir = Path(output).expanduser() if output else run_dir / TENSORBOARD_DIR
    if others := other_event_files(logdir):
        error(
            f"{logdir} already holds {len(others)} event file(s) that tuiloop export did not write (the run's live mirror, [run] tensorboard = true?); "
            f"point TensorBoard at it as it is (tensorboard --logdir {logdir}), or export elsewhere with -o PATH"
        )
        return EXIT_USAGE
    try:
        n = write_tensorboard(h, logdir)
    except TensorBoardXMissing as e:
        error(f"{e} (or export the run as CSV: tuiloop export {run_dir} --format csv)")
        return EXIT_USAGE
    except OSError as e:
        error(f"cannot write TensorBoard event files into {logdir}: {e.strerror or e}")
        return EXIT_USAGE
    print(f"wrote {n} scalars ({len(h.steps)} steps, {len(h.validations)} validations{_test(h)}) to {logdir}/")
    print(f"  view them: tensorboard --logdir {logdir}")
    return 0
