"""The ``tuiloop`` command: run, attach, show, ls."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import traceback
from pathlib import Path

from tuiloop import __version__
from tuiloop.spec import SpecError

EXAMPLES = """\
examples:
  tuiloop run demos/digits.toml                 train with the live monitor
  tuiloop run demos/digits.toml --headless      plain log lines (also when not on a terminal)
  tuiloop run demos/digits.toml --set optimizer.lr=3e-4 --set run.epochs=5
  tuiloop run --resume runs/digits-mlp-20261124-120000-ab12
  tuiloop run demos/digits.toml --detach        start in the background and return
  tuiloop attach                                the monitor on the newest live run in ./runs
  tuiloop ls                                    list the runs in ./runs
  tuiloop show ab12                             a past run, read-only (any unique part of its name)
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tuiloop", description="A terminal UI training monitor for PyTorch.", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"tuiloop {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="train the model a spec describes", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("spec", nargs="?", help="the TOML spec (optional with --resume: the run's own spec is used)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a spec key; VALUE is TOML (bare words are strings); repeatable")
    r.add_argument("--headless", action="store_true", help="print plain log lines instead of the live monitor (automatic when stdout is not a terminal)")
    r.add_argument("--detach", action="store_true", help="start the run in the background, print its run directory, and return")
    r.add_argument("--resume", metavar="RUN_DIR", type=Path, help="continue a run from its checkpoints/last.pt, appending to its event log")
    r.add_argument("--exit-on-finish", action="store_true", help="close the monitor when the run ends instead of waiting for a key")
    r.add_argument("--debug", action="store_true", help="show Python tracebacks for spec and setup errors")

    a = sub.add_parser("attach", help="open the monitor on a live run (keys work; d detaches, the run goes on)")
    a.add_argument("run", nargs="?", metavar="RUN_DIR", help="a run directory, or a unique part of a run name under ./runs (default: the newest live run there)")
    a.add_argument("--out-dir", type=Path, default=Path("runs"), help="where to look for runs (default: ./runs)")

    v = sub.add_parser("show", help="open a finished or crashed run in the monitor, read-only (without a terminal: print its log)")
    v.add_argument("run", metavar="RUN_DIR", help="a run directory, or a unique part of a run name under ./runs")
    v.add_argument("--out-dir", type=Path, default=Path("runs"), help="where to look for runs (default: ./runs)")

    ls = sub.add_parser("ls", help="list runs: state, epochs, best metric, duration, start time")
    ls.add_argument("out_dir", nargs="?", type=Path, default=Path("runs"), metavar="OUT_DIR", help="the runs directory (default: ./runs)")

    w = sub.add_parser("_worker", help=argparse.SUPPRESS)
    w.add_argument("run_dir", type=Path)
    w.add_argument("--resume", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 2
    debug = getattr(args, "debug", False)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "_worker":
            return cmd_worker(args)
        if args.command in ("attach", "show", "ls"):
            from tuiloop import views

            return {"attach": views.cmd_attach, "show": views.cmd_show, "ls": views.cmd_ls}[args.command](args)
    except SpecError as e:
        if debug:
            traceback.print_exc()
        from tuiloop.spec.errors import from_override

        print(f"tuiloop: error: {from_override(e, getattr(args, 'overrides', None) or [])}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


def _load(args: argparse.Namespace):
    from tuiloop.session import load_run_spec
    from tuiloop.spec import load_spec
    from tuiloop.spec.load import apply_override, validate

    if args.resume is not None:
        if not (args.resume / "run.json").is_file():
            raise SpecError(f"--resume {args.resume}", "not a tuiloop run directory (no run.json)", "Pass a folder under your runs directory; `tuiloop ls` lists them.")
        args.resume = args.resume.resolve()
    if args.spec:
        return load_spec(args.spec, args.overrides)
    if args.resume is None:
        raise SpecError("tuiloop run", "no spec file given", "Usage: tuiloop run SPEC.toml (or --resume RUN_DIR).")
    spec = load_run_spec(args.resume)
    if args.overrides:
        for item in args.overrides:
            apply_override(spec.raw, item)
        spec = validate(spec.raw, spec.where, spec.base_dir, spec.path)
    return spec


def cmd_run(args: argparse.Namespace) -> int:
    from tuiloop.engine.sinks import PlainSink
    from tuiloop.session import execute, prepare_run_dir

    spec = _load(args)
    headless = args.headless or not sys.stdout.isatty()
    if headless and not args.detach:
        code, _ = execute(spec, resume=args.resume, sinks=[PlainSink(sys.stdout)])
        return code
    from tuiloop.spec import resolve

    resolve(spec)  # import errors show here, before anything starts
    run_dir = prepare_run_dir(spec, args.resume)
    proc = spawn_worker(run_dir, resume=args.resume is not None)
    from tuiloop.rundir import record_process

    record_process(run_dir, proc.pid)  # so `ls` and `attach` see it live before it starts up
    if args.detach:
        print(f"started {run_dir} (pid {proc.pid})")
        print(f"  watch it:  tuiloop attach {run_dir}")
        print(f"  its log:   {run_dir / 'output.log'}")
        return 0
    from tuiloop.tui.launch import monitor_run

    return monitor_run(run_dir, proc, exit_on_finish=args.exit_on_finish)


def spawn_worker(run_dir: Path, resume: bool = False) -> subprocess.Popen:
    """Start the training process in its own session, so a hung-up terminal does not end it."""
    cmd = [sys.executable, "-m", "tuiloop", "_worker", str(run_dir)] + (["--resume"] if resume else [])
    with open(run_dir / "output.log", "ab") as out:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def cmd_worker(args: argparse.Namespace) -> int:
    from tuiloop.engine.sinks import PlainSink
    from tuiloop.session import execute, load_run_spec

    run_dir = args.run_dir.resolve()
    code, _ = execute(load_run_spec(run_dir), run_dir=run_dir, resume=run_dir if args.resume else None, sinks=[PlainSink(sys.stdout)])
    return code


if __name__ == "__main__":
    raise SystemExit(main())
