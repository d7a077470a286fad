"""``tuiloop run``: train a spec headless in the foreground, or in a background process with the
live monitor; on several processes (torchrun, DDP) when asked, or as one rank of a launch the
user started (torchrun, srun)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import tuiloop.runner.training_process as training_process
from tuiloop.cli.say import error
from tuiloop.engine.events import Failed, Finished, RunStarted, Starting
from tuiloop.engine.exits import EXIT_FORCED
from tuiloop.engine.plain import PlainSink
from tuiloop.rundir.control import ControlError, send_command
from tuiloop.rundir.eventlog import EventTail
from tuiloop.rundir.layout import OUTPUT, RUN_INFO
from tuiloop.runner.fork import fork_run
from tuiloop.runner.processes import kill_tree
from tuiloop.runner.rank import run_rank, under_a_launcher
from tuiloop.runner.spec_run import IMPORTING, execute, load_run_spec, lock_for_resume, new_run_dir
from tuiloop.runner.torchrun import processes_for, torchrun_args
from tuiloop.runner.writable import remove_half_made
from tuiloop.spec import Spec, SpecError, load_spec, resolve
from tuiloop.spec.load import apply_override, validate
from tuiloop.spec.userconfig import notify_settings

_FORK_FIRST = "Fork on one machine first (tuiloop run --fork RUN --detach, then stop it), then resume the fork on them."


def load(args: argparse.Namespace) -> Spec:
    """The spec to run: the file given (with --set), or for --resume or --fork without one the
    run's own (a fork without one goes beside its parent, unless --set run.out_dir says where)."""
    if args.fork is not None:
        if args.resume is not None:
            raise SpecError(
                "--fork", "--fork and --resume together", "Resume a run, or fork it into a new one: not both."
            )
        args.fork = _run_dir_arg("--fork", args.fork)
        if args.spec:
            return load_spec(args.spec, args.overrides)
        spec = load_run_spec(args.fork)
        spec.raw.setdefault("run", {})["out_dir"] = str(args.fork.parent)
        return _overridden(spec, args.overrides)
    elif args.source is not None:
        raise SpecError(
            "--from", "--from without --fork", "Use it with --fork RUN: the checkpoint of RUN to start from."
        )
    if args.resume is not None:
        args.resume = _run_dir_arg("--resume", args.resume)
    if args.spec:
        return load_spec(args.spec, args.overrides)
    if args.resume is None:
        raise SpecError("tuiloop run", "no spec file given", "Usage: tuiloop run SPEC.toml (or --resume RUN_DIR).")
    return _overridden(load_run_spec(args.resume), args.overrides)


def _run_dir_arg(option: str, path: Path) -> Path:
    """The run directory ``option`` names, absolute; a folder without run.json is refused."""
    if not (path / RUN_INFO).is_file():
        raise SpecError(
            f"{option} {path}",
            "not a tuiloop run directory (no run.json)",
            "Pass a folder under your runs directory; `tuiloop ls` lists them.",
        )
    return path.resolve()


def _overridden(spec: Spec, overrides: list[str]) -> Spec:
    """A run's own spec with ``--set`` applied."""
    for item in overrides:
        apply_override(spec.raw, item)
    return validate(spec.raw, spec.where, spec.base_dir, spec.path)


def cmd_run(args: argparse.Namespace) -> int:
    for option, key in ((args.name, "name"), (args.out_dir, "out_dir")):
        if option is not None:
            raise SpecError(f"--{key.replace('_', '-')}", "is for a script", f"For a spec use --set run.{key}=...")
    spec = load(args)
    notify_settings(spec.raw.get("notify"))  # the user's config.toml checked too, before anything starts
    if under_a_launcher():  # torchrun or srun started this process as one rank: join
        if args.fork is not None:
            raise SpecError("--fork", "a fork is made before its ranks start", _FORK_FIRST)
        return run_rank(spec, args.resume, args.resume is not None)
    torchrun = _torchrun_args(args, spec)
    headless = args.headless or not sys.stdout.isatty() or (torchrun is not None and args.node_rank > 0)
    if args.fork is not None:
        if args.nnodes > 1:
            raise SpecError("--fork", "a fork of a run on several machines", _FORK_FIRST)
        forked, fork_lock = fork_run(args.fork, spec, args.source or "last")
        args.resume = forked  # from here a fork is a resume of its new directory
    if headless and not args.detach and torchrun is None:
        if args.fork is None:
            code, _ = execute(spec, resume=args.resume, sinks=[PlainSink(sys.stdout)])
            return code
        try:
            code, _ = execute(spec, resume=forked, sinks=[PlainSink(sys.stdout)], lock=fork_lock)
        except BaseException:
            remove_half_made(forked)  # it never trained: no fork is left behind
            raise
        return code
    # The user's module is imported once, by the training process: the monitor opens at once and
    # shows the import with its time so far; --detach waits for it (below) to report its errors.
    session = uuid.uuid4().hex[:12]
    if torchrun is not None and args.node_rank > 0:  # rank 0 and the run directory are on node 0
        resolve(spec)  # import errors show here, before this node's ranks start
        return supervise(
            training_process.start(None, None, spec, torchrun=torchrun, session=session, inherit_output=True), None
        )
    if args.fork is not None:
        run_dir, lock = forked, fork_lock
    elif args.resume is not None:
        run_dir, lock = args.resume, lock_for_resume(args.resume)
    else:
        run_dir, lock = new_run_dir(spec)
    inherit = headless and not args.detach
    try:
        proc = training_process.start(
            run_dir,
            lock,
            spec,
            resume=args.resume is not None,
            torchrun=torchrun,
            session=session,
            inherit_output=inherit,
        )
    finally:
        lock.release()  # our copy: the training process holds the lock now
    if args.resume is not None and not inherit and not training_process.wait_ready(proc, sys.stderr, run_dir):
        if args.fork is not None:
            remove_half_made(run_dir)  # it never trained: no fork is left behind
        return proc.returncode  # it said why (relayed above); the run directory is as it was
    if args.detach:
        if args.resume is None and not _past_imports(proc, run_dir):
            return proc.returncode  # it failed while it started, and we said why
        print(f"started {run_dir} (pid {proc.pid})")
        print(f"  watch it:  tuiloop attach {run_dir}")
        print(f"  its log:   {run_dir / 'output.log'}")
        return 0
    if inherit:
        return supervise(proc, run_dir)
    from tuiloop.cli.monitor import monitor_run  # lazy: keeps textual out of headless and detached runs

    return monitor_run(run_dir, proc, exit_on_finish=args.exit_on_finish, session=session)


def _past_imports(proc: Any, run_dir: Path) -> bool:
    """Wait until a detached run has imported the spec's targets (True), or has ended (False,
    after telling why: a spec mistake in the user's module is said here, as without --detach)."""
    tail = EventTail(run_dir)
    failure: Failed | None = None
    while True:
        ended = proc.poll() is not None
        for ev in tail.poll():
            if isinstance(ev, RunStarted) or (isinstance(ev, Starting) and ev.phase not in IMPORTING):
                return True
            if isinstance(ev, Failed):
                failure = ev
            if isinstance(ev, Finished):
                proc.wait()
                ended = True
        if ended:
            if failure is None:  # its event log could not say it: its output does
                said = [line for line in _output(run_dir).splitlines() if line.startswith("error: ")]
                error(
                    f"{said[-1].removeprefix('error: ') if said else 'the run ended while it started'}; its output is in {run_dir / OUTPUT}"
                )
            else:
                error(failure.error + ("" if failure.where == "setup" else f"\n  where: {failure.where}"))
            return False
        time.sleep(0.05)


def _output(run_dir: Path) -> str:
    try:
        return (run_dir / OUTPUT).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _torchrun_args(args: argparse.Namespace, spec: Spec) -> list[str] | None:
    """torchrun's options when this run takes more than one process, else None."""
    nproc = processes_for(args.nproc_per_node or spec.run.nproc_per_node)
    if args.nnodes > 1 and not args.rdzv_endpoint:
        raise SpecError(
            "--nnodes",
            f"{args.nnodes} machines need a place to meet",
            "Add --rdzv-endpoint HOST:PORT (node 0's address and a free port) and --node-rank R on each.",
        )
    if not 0 <= args.node_rank < args.nnodes:
        raise SpecError(
            "--node-rank",
            f"{args.node_rank} is not a node of --nnodes {args.nnodes}",
            f"Use 0 to {args.nnodes - 1}; node 0 hosts rank 0.",
        )
    if nproc == 1 and args.nnodes == 1:
        return None
    return torchrun_args(nproc, args.nnodes, args.node_rank, args.rdzv_endpoint, args.rdzv_id)


def supervise(proc: Any, run_dir: Path | None, fallback: int = signal.SIGTERM) -> int:
    """Wait for a distributed run in the foreground, passing Ctrl+C on as its monitor would: the
    first stops every rank gracefully (the stop command to rank 0, or ``fallback`` to the launcher
    on a node without rank 0, or to a script that logs nothing to tuiloop), the second forces
    them all, leaving no process behind."""
    interrupts = 0

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal interrupts
        interrupts += 1 if signum == signal.SIGINT else 0
        if interrupts > 1:
            os.write(2, b"\ntuiloop: second interrupt: forcing every rank to exit now, without saving\n")
            if not _send(run_dir, "force"):
                kill_tree(proc.pid)
            return
        os.write(
            2, b"\ntuiloop: interrupt: stopping every rank after this step and saving (press Ctrl+C again to force)\n"
        )
        if not _send(run_dir, "stop"):
            os.kill(proc.pid, fallback)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while proc.poll() is None:
        time.sleep(0.1)
    if interrupts > 1:  # whatever rank 0 managed before it went, nothing of the run stays behind
        kill_tree(proc.pid)
    return EXIT_FORCED if interrupts > 1 else proc.returncode


def _send(run_dir: Path | None, cmd: str) -> bool:
    if run_dir is None:
        return False
    try:
        send_command(run_dir, cmd)
    except ControlError:
        return False
    return True
