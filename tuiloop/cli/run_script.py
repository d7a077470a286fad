"""``tuiloop run SCRIPT.py [ARGS...]``: any Python script as a watched run, headless, in the
background (``--detach``) or with the live monitor; on several processes with ``--nproc-per-node``
(:mod:`tuiloop.runner.script`)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import tuiloop.runner.script as script_run
from tuiloop.cli.run import supervise
from tuiloop.engine.exits import EXIT_FORCED
from tuiloop.rundir.control import ControlError, send_command
from tuiloop.rundir.handle import RunDirError
from tuiloop.rundir.layout import EVENTS, create_run_dir
from tuiloop.runner.rank import under_a_launcher
from tuiloop.runner.torchrun import processes_for, torchrun_args
from tuiloop.spec import SpecError

UNTRACKED_AFTER_S = 10.0  # the monitor shows the output of a script that logged nothing by then


def cmd_run_script(args: argparse.Namespace, script_args: list[str]) -> int:
    """Start ``args.spec`` (a ``.py`` file) with ``script_args``; return its exit status (0 when detached)."""
    script = Path(args.spec)
    _refuse_spec_options(args)
    if not script.is_file():
        raise SpecError(f"tuiloop run {args.spec}", "no such script", "Give the path of a Python script to run.")
    if under_a_launcher():
        raise SpecError(
            f"tuiloop run {args.spec}",
            "started as one rank of several (torchrun, srun)",
            f"Run the script under your launcher directly (torchrun ... {args.spec}), or let tuiloop launch it: "
            f"tuiloop run --nproc-per-node N {args.spec}.",
        )
    nproc = processes_for(args.nproc_per_node or 1)
    torchrun = torchrun_args(nproc) if nproc > 1 else None
    headless = args.headless or not sys.stdout.isatty()
    name = args.name or script.stem
    out_dir = args.out_dir or Path("runs")
    try:
        home = create_run_dir(out_dir, name)
    except RunDirError as e:
        raise SpecError(f"--out-dir {e.where}", e.problem, f"{e.fix}.") from None
    except OSError as e:
        raise SpecError(f"--out-dir {out_dir}", f"no run directory can be made there ({e.strerror})") from None
    run_dir = home.path
    lock = script_run.new_script_dir(home, script.resolve(), script_args, name)
    session = uuid.uuid4().hex[:12]
    inherit = headless and not args.detach
    try:
        proc = script_run.start(run_dir, lock, script.resolve(), script_args, torchrun, session, inherit)
    finally:
        lock.release()  # our copy: the training process holds the lock now
    if args.detach:
        print(f"started {run_dir} (pid {proc.pid})")
        print(f"  watch it:  tuiloop attach {run_dir}")
        print(f"  its log:   {run_dir / 'output.log'}")
        return 0
    if inherit:  # a script that logs nothing to tuiloop hears the first Ctrl+C as its own
        return supervise(proc, run_dir, signal.SIGINT if torchrun is None else signal.SIGTERM)
    from tuiloop.cli.monitor import monitor_run  # lazy: keeps textual out of headless and detached runs

    code = monitor_run(
        run_dir,
        proc,
        exit_on_finish=args.exit_on_finish,
        session=session,
        commander=commander(run_dir, proc, signal.SIGINT if torchrun is None else signal.SIGTERM),
        untracked_after=UNTRACKED_AFTER_S,
    )
    return proc.returncode if proc.poll() is not None and code != EXIT_FORCED else code


def commander(run_dir: Path, proc: Any, fallback: int) -> Any:
    """The monitor's keys for a script: the run's control socket; while the script has opened no
    run (none of its keys can act), a stop is ``fallback`` to the script, as Ctrl+C in a terminal."""

    def send(cmd: str, **fields: Any) -> Any:
        try:
            return send_command(run_dir, cmd, **fields)
        except ControlError:
            if cmd != "stop" or (run_dir / EVENTS).exists() or proc.poll() is not None:
                raise
            os.kill(proc.pid, fallback)
            return {"ok": True}

    return send


def _refuse_spec_options(args: argparse.Namespace) -> None:
    for given, option in (
        (args.overrides, "--set"),
        (args.resume, "--resume"),
        (args.fork, "--fork"),
        (args.source, "--from"),
        (args.nnodes > 1, "--nnodes"),
    ):
        if given:
            raise SpecError(
                f"tuiloop run {args.spec}",
                f"{option} is for a spec, not a script",
                "Give the script its own arguments after its name: tuiloop run [OPTIONS] SCRIPT.py ARGS...",
            )
