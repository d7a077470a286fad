"""``tuiloop run``: train a spec headless in the foreground, or in a background process with the live monitor."""

from __future__ import annotations

import argparse
import sys

from tuiloop.spec import Spec, SpecError


def load(args: argparse.Namespace) -> Spec:
    """The spec to run: the file given (with --set), or for --resume without one the run's own."""
    from tuiloop.rundir.layout import RUN_INFO
    from tuiloop.session.run import load_run_spec
    from tuiloop.spec import load_spec
    from tuiloop.spec.load import apply_override, validate

    if args.resume is not None:
        if not (args.resume / RUN_INFO).is_file():
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
    from tuiloop.engine.plain import PlainSink
    from tuiloop.session import worker
    from tuiloop.session.run import execute, lock_for_resume, new_run_dir
    from tuiloop.spec import resolve

    spec = load(args)
    headless = args.headless or not sys.stdout.isatty()
    if headless and not args.detach:
        code, _ = execute(spec, resume=args.resume, sinks=[PlainSink(sys.stdout)])
        return code
    resolve(spec)  # import errors show here, before anything starts
    if args.resume is not None:
        run_dir, lock = args.resume, lock_for_resume(args.resume)
    else:
        run_dir, lock = new_run_dir(spec)
    try:
        proc = worker.start(run_dir, lock, spec, resume=args.resume is not None)
    finally:
        lock.release()  # our copy: the worker holds the lock now
    if args.resume is not None and not worker.wait_ready(proc, sys.stderr):
        return proc.returncode  # it said why (relayed above); the run directory is as it was
    if args.detach:
        print(f"started {run_dir} (pid {proc.pid})")
        print(f"  watch it:  tuiloop attach {run_dir}")
        print(f"  its log:   {run_dir / 'output.log'}")
        return 0
    from tuiloop.tui.launch import monitor_run

    return monitor_run(run_dir, proc, exit_on_finish=args.exit_on_finish)
