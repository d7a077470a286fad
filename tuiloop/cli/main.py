"""The ``tuiloop`` command: its arguments, and what every subcommand shares (errors, pipes)."""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
import traceback
from pathlib import Path

from tuiloop import __version__
from tuiloop.cli.script_args import split_script
from tuiloop.engine.exits import EXIT_FORCED, EXIT_USAGE
from tuiloop.rundir.catalog import not_yours
from tuiloop.spec import SpecError
from tuiloop.spec.errors import from_override

EXAMPLES = """\
examples:
  tuiloop run demos/digits.toml                 train with the live monitor
  tuiloop run demos/digits.toml --headless      plain log lines (also when not on a terminal)
  tuiloop run demos/digits.toml --set optimizer.lr=3e-4 --set run.epochs=5
  tuiloop run --resume runs/digits-mlp-20261124-120000-ab12
  tuiloop run demos/digits.toml --detach        start in the background and return
  tuiloop run train.py --lr 3e-4                your own script, watched (the arguments after it are its)
  tuiloop attach                                the monitor on the newest live run in ./runs
  tuiloop ls                                    list the runs in ./runs
  tuiloop show ab12                             a past run, read-only (any unique part of its name)
  tuiloop compare 1c2e ab12                     val_loss by epoch of several runs, and the spec values that differ
  tuiloop eval ab12 --json                      best.pt on the test split: the metrics as one JSON object
  tuiloop export ab12 --format tensorboard      its scalars as TensorBoard event files (or --format csv)
  tuiloop ctl ab12 pause                        the key's command from a script: returns once the run paused
  tuiloop ctl ab12 set optimizer.lr=1e-4        change a setting of a live run from its next step
  tuiloop status ab12 --json                    how a run stands, as one JSON object
"""

# `tuiloop ctl RUN ACTION`: the monitor's commands as a script types them (tuiloop/cli/ctl.py maps them)
CTL_ACTIONS = ("pause", "resume", "stop", "stop-after-epoch", "go-on", "save", "suspend", "force")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tuiloop",
        description="A terminal UI training monitor for PyTorch.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"tuiloop {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser(
        "run",
        help="train the model a spec describes, or run a Python script (SCRIPT.py [ARGS...]) as a watched run",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument(
        "spec",
        nargs="?",
        help="the TOML spec (optional with --resume: the run's own spec is used), or SCRIPT.py: the arguments "
        "after it are the script's",
    )
    r.add_argument("--name", help="a script's run name (default: the script's name); a spec's is [run] name")
    r.add_argument(
        "--out-dir",
        type=Path,
        help="where a script's run directory is made (default: ./runs); a spec's is [run] out_dir",
    )
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a spec key; VALUE is TOML (bare words are strings); repeatable",
    )
    r.add_argument(
        "--headless",
        action="store_true",
        help="print plain log lines instead of the live monitor (automatic when stdout is not a terminal)",
    )
    r.add_argument(
        "--detach", action="store_true", help="start the run in the background, print its run directory, and return"
    )
    r.add_argument(
        "--resume",
        metavar="RUN_DIR",
        type=Path,
        help="continue a run from its checkpoints/last.pt, appending to its event log",
    )
    r.add_argument(
        "--fork",
        metavar="RUN_DIR",
        type=Path,
        help="start a new run from a checkpoint of RUN_DIR (edits as for --resume; the parent is only read)",
    )
    r.add_argument(
        "--from",
        dest="source",
        metavar="best|last|PATH",
        help="with --fork: the checkpoint to start from (default last; PATH: a file of RUN_DIR/checkpoints, by name or path)",
    )
    r.add_argument(
        "--exit-on-finish", action="store_true", help="close the monitor when the run ends instead of waiting for a key"
    )
    r.add_argument("--debug", action="store_true", help="show Python tracebacks for spec and setup errors")
    d = r.add_argument_group("distributed (torchrun, DDP)")
    d.add_argument(
        "--nproc-per-node",
        metavar="N|auto",
        help="processes on this machine, one per GPU (auto: every visible GPU); default [run] nproc_per_node, else 1",
    )
    d.add_argument(
        "--nnodes", type=int, default=1, metavar="N", help="machines in the run (run the same command on each)"
    )
    d.add_argument(
        "--node-rank",
        type=int,
        default=0,
        metavar="R",
        help="this machine's number, 0 to N-1; node 0 hosts rank 0, the run directory and the monitor",
    )
    d.add_argument(
        "--rdzv-endpoint", metavar="HOST:PORT", help="where the nodes meet: node 0's address and a free port"
    )
    d.add_argument("--rdzv-id", metavar="ID", help="a name for this job's rendezvous")

    a = sub.add_parser("attach", help="open the monitor on a live run (keys work; d detaches, the run goes on)")
    a.add_argument(
        "run",
        nargs="?",
        metavar="RUN_DIR",
        help="a run directory, or a unique part of a run name under ./runs (default: the newest live run there)",
    )
    a.add_argument("--out-dir", type=Path, default=Path("runs"), help="where to look for runs (default: ./runs)")

    v = sub.add_parser(
        "show", help="open a finished or crashed run in the monitor, read-only (without a terminal: print its log)"
    )
    v.add_argument("run", metavar="RUN_DIR", help="a run directory, or a unique part of a run name under ./runs")
    v.add_argument("--out-dir", type=Path, default=Path("runs"), help="where to look for runs (default: ./runs)")

    e = sub.add_parser(
        "export",
        help="write a run's steps and validations as CSV or TensorBoard event files (finished, crashed or live runs)",
    )
    e.add_argument("run", metavar="RUN_DIR", help="a run directory, or a unique part of a run name under ./runs")
    e.add_argument(
        "--format",
        default="csv",
        metavar="csv|tensorboard",
        help="csv: one row per step and per validation; tensorboard: event files (needs tensorboardX); default: csv",
    )
    e.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="where to write (default: RUN_DIR/export.csv or RUN_DIR/tensorboard/); '-' writes the CSV to stdout",
    )
    e.add_argument("--out-dir", type=Path, default=Path("runs"), help="where to look for runs (default: ./runs)")

    ev = sub.add_parser(
        "eval",
        help="evaluate a checkpoint of a run on its validation or test split, with the run's own spec (reads only)",
        description="Evaluate a checkpoint of a run (checked against the SHA-256 its save recorded) on a split, "
        "with the run's spec and --set edits, and print each metric. Writes nothing into the run directory; "
        "works on finished, crashed and live runs. Exit status: 0 done, 1 the code raised, 2 refused.",
    )
    ev.add_argument("run", metavar="RUN", help="a run directory, or a unique part of a run name under ./runs")
    ev.add_argument(
        "--checkpoint",
        default="best",
        metavar="best|last|NAME",
        help="best.pt (default), last.pt, or the name of another file of RUN/checkpoints",
    )
    ev.add_argument("--split", default="test", metavar="val|test", help="the split to evaluate (default: test)")
    ev.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="edit the run's spec for this evaluation (other data arguments, run.device=cpu); repeatable",
    )
    ev.add_argument("--json", action="store_true", help="one JSON object; its metrics map each name to its value")
    ev.add_argument("--debug", action="store_true", help="show the Python traceback when the code raises")
    ev.add_argument("--out-dir", type=Path, default=Path("runs"), help="where to look for runs (default: ./runs)")

    c = sub.add_parser(
        "compare",
        help="several runs on one screen: a metric by epoch, and the spec values that differ (without a terminal: a table)",
    )
    c.add_argument(
        "runs", nargs="+", metavar="RUN", help="two or more run directories, or unique parts of run names under ./runs"
    )
    c.add_argument("--metric", metavar="NAME", help="the metric shown first (default: val_loss); m shows the next")
    c.add_argument("--out-dir", type=Path, default=Path("runs"), help="where to look for runs (default: ./runs)")

    ls = sub.add_parser("ls", help="list runs: state, epochs, best metric, duration, start time")
    ls.add_argument(
        "out_dir",
        nargs="?",
        type=Path,
        default=Path("runs"),
        metavar="OUT_DIR",
        help="the runs directory (default: ./runs)",
    )
    ls.add_argument(
        "--state",
        metavar="STATE[,STATE]",
        help="only runs in these states: running, paused, finished, early_stopped, stopped, suspended, failed, forced, crashed",
    )
    ls.add_argument(
        "--all", action="store_true", help="also list runs that failed before their first step (hidden by default)"
    )
    ls.add_argument(
        "--json", action="store_true", help="a JSON list of objects, one per run (fields: docs/commands.md)"
    )

    ctl = sub.add_parser(
        "ctl",
        help="send a live run a command (the monitor's keys) or new settings, and wait until it has acted",
        description="Send a live run one of the monitor's commands, or change its settings (set KEY=VALUE ...), "
        "and return once its event log shows the effect. Exit status: 0 done (or already so), 1 the run is not "
        "live, 2 no such run / a command or setting it does not take, 3 it did not act within --timeout.",
    )
    ctl.add_argument("run", metavar="RUN", help="a run directory, or a unique part of a run name under ./runs")
    ctl.add_argument("action", choices=(*CTL_ACTIONS, "set"), metavar="ACTION", help=f"{', '.join(CTL_ACTIONS)} or set")
    ctl.add_argument("settings", nargs="*", metavar="KEY=VALUE", help="with set: spec keys and TOML values, as --set")
    ctl.add_argument(
        "--timeout", type=float, default=60.0, metavar="S", help="seconds to wait for the run to act (default: 60)"
    )
    ctl.add_argument(
        "--wait", action="store_true", help="stop, suspend, stop-after-epoch: also wait for the run to end"
    )
    ctl.add_argument("--out-dir", type=Path, default=Path("runs"), help="where to look for runs (default: ./runs)")

    st = sub.add_parser(
        "status", help="how one run stands: state, epoch and step, lr, last and best metrics, ETA, pid and host"
    )
    st.add_argument("run", metavar="RUN", help="a run directory, or a unique part of a run name under ./runs")
    st.add_argument("--json", action="store_true", help="one JSON object (its fields: docs/commands.md)")
    st.add_argument("--out-dir", type=Path, default=Path("runs"), help="where to look for runs (default: ./runs)")
    return p


# Started by tuiloop itself in its child processes, never by a person: a parser of their own, so
# that --help, the usage line and the "invalid choice" error of the public one never name them.
INTERNAL = ("_train", "_launch", "_rank", "_script")


def _internal_parser() -> argparse.ArgumentParser:
    """The subcommands of tuiloop's own processes: the training process, the torchrun launcher, a rank."""
    p = argparse.ArgumentParser(prog="tuiloop")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("_train")
    w.add_argument("run_dir", type=Path)
    w.add_argument("--lock-fd", type=int, required=True)
    w.add_argument("--resume", action="store_true")

    la = sub.add_parser("_launch")
    la.add_argument("run_dir", nargs="?", type=Path)
    la.add_argument("--lock-fd", type=int)
    la.add_argument("--resume", action="store_true")
    la.add_argument("--report-ready", action="store_true")  # torchrun's options follow "--"

    rk = sub.add_parser("_rank")
    rk.add_argument("--resume", action="store_true")

    sc = sub.add_parser("_script")  # the script and its arguments follow "--"
    sc.add_argument("run_dir", nargs="?", type=Path)
    sc.add_argument("--lock-fd", type=int)
    sc.add_argument("--torchrun")  # JSON: torchrun's options; this process is the launcher
    sc.add_argument("--rank", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the ``tuiloop`` command line ``argv`` (default: this process's); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if argv[:1] in (["_launch"], ["_script"]) and "--" in argv:  # our own options, then torchrun's or a script's
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    elif argv[:1] == ["run"]:
        argv, extra = split_script(argv, _parser())
    args = (_internal_parser() if argv[:1] and argv[0] in INTERNAL else _parser()).parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return EXIT_USAGE
    debug = getattr(args, "debug", False)
    if args.command in ("run", "_train", "_rank", "_script"):
        _report_crashes()
    try:
        if args.command == "run" and args.spec and args.spec.endswith(".py"):
            from tuiloop.cli.run_script import cmd_run_script  # lazy: import only the command run

            return cmd_run_script(args, extra)
        if args.command == "run":
            from tuiloop.cli.run import cmd_run  # lazy: import only the command run

            return cmd_run(args)
        if args.command == "_script":
            from tuiloop.runner.script import internal_main  # lazy: import only the command run

            return internal_main(args, extra)
        if args.command == "_train":
            from tuiloop.runner.training_process import main as train_main  # lazy: import only the command run

            return train_main(args.run_dir.resolve(), args.lock_fd, args.resume)
        if args.command == "_launch":
            from tuiloop.runner.launch import main as launch_main  # lazy: import only the command run

            return launch_main(
                args.run_dir.resolve() if args.run_dir else None, args.lock_fd, args.resume, extra, args.report_ready
            )
        if args.command == "_rank":
            from tuiloop.runner.rank import main as rank_main  # lazy: import only the command run

            return rank_main(args.resume)
        if args.command in ("attach", "show"):
            from tuiloop.cli.views import cmd_attach, cmd_show  # lazy: import only the command run

            code = {"attach": cmd_attach, "show": cmd_show}[args.command](args)
        elif args.command == "compare":
            from tuiloop.cli.compare import cmd_compare  # lazy: import only the command run

            code = cmd_compare(args)
        elif args.command == "ls":
            from tuiloop.cli.ls import cmd_ls  # lazy: import only the command run

            code = cmd_ls(args)
        elif args.command == "ctl" and args.action == "set":
            from tuiloop.cli.ctl_set import cmd_ctl_set  # lazy: import only the command run

            code = cmd_ctl_set(args)
        elif args.command == "ctl":
            from tuiloop.cli.ctl import cmd_ctl  # lazy: import only the command run

            code = cmd_ctl(args)
        elif args.command == "status":
            from tuiloop.cli.status import cmd_status  # lazy: import only the command run

            code = cmd_status(args)
        elif args.command == "eval":
            from tuiloop.cli.eval import cmd_eval  # lazy: import only the command run

            code = cmd_eval(args)
        elif args.command == "export":
            from tuiloop.cli.export import cmd_export  # lazy: import only the command run

            code = cmd_export(args)
        sys.stdout.flush()  # inside the try: a reader that went away is noticed here
        return code
    except SpecError as e:
        if debug:
            traceback.print_exc()
        print(f"tuiloop: error: {from_override(e, getattr(args, 'overrides', None) or [])}", file=sys.stderr)
        return EXIT_USAGE
    except PermissionError as e:  # a file of another user's run: one paragraph, no traceback
        if debug:
            traceback.print_exc()
        where = Path(e.filename) if e.filename else Path(".")
        print(f"tuiloop: error: {not_yours(where)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FORCED
    except BrokenPipeError:
        return _quiet_broken_pipe()
    return EXIT_USAGE


def _report_crashes() -> None:
    """A process that runs the user's code prints the Python stack when it crashes (SIGSEGV,
    SIGABRT, ...): on the terminal, or into output.log where the training process's watcher
    finds the user's line (:mod:`tuiloop.runner.watch`)."""
    if not faulthandler.is_enabled():
        try:
            faulthandler.enable()
        except (OSError, ValueError, AttributeError):
            pass  # a stderr without a file descriptor (an embedding application)


def _quiet_broken_pipe() -> int:
    """The reader of our output went away (``tuiloop show RUN | head``): stop without a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again
    os.close(devnull)
    return 0
