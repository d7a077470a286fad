"""``tuiloop ctl RUN ACTION``: the monitor's commands, from a script.

It sends the same command as the key, over the run's control socket, and returns once the run has
acted on it: once the effect is in the event log (the ``paused`` state, the manual checkpoint,
...), which it reads from where the log stood before the command was sent. It prints what
happened, one line (``paused at step 1234``), or says in one line why not and exits with
:data:`EXIT_NOT_LIVE` or :data:`EXIT_TIMEOUT` (``EXIT_USAGE`` for no such run, or a command the
run's loop does not obey). Sending a command that is already in effect (``pause`` to a paused
run) sends nothing and says so.
"""

from __future__ import annotations

import argparse
import math
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from tuiloop.cli.say import error
from tuiloop.cli.status import read_model
from tuiloop.cli.views import not_live_message
from tuiloop.engine.events import CheckpointSaved, Event, Finished, SettingChanged, StateChanged
from tuiloop.engine.exits import EXIT_FAILED, EXIT_USAGE
from tuiloop.rundir.catalog import RunNotFound, resolve_run
from tuiloop.rundir.control_client import ControlError, ControlTimeout, send_command
from tuiloop.rundir.eventlog import EventTail
from tuiloop.rundir.state import run_state
from tuiloop.tui.model import MonitorModel

EXIT_NOT_LIVE = EXIT_FAILED  # the run is not live (it ended, crashed, or runs on another machine)
EXIT_TIMEOUT = 3  # the command was sent (or the run did not take it) but the run did not act on it in time
ACTIONS = {  # what the user types -> the command of the table (tuiloop/engine/commands.py)
    "pause": "pause",
    "resume": "resume",
    "stop": "stop",
    "stop-after-epoch": "stop_after_epoch",
    "go-on": "go_on",
    "save": "save",
    "suspend": "suspend",
    "force": "force",
}
DONE = {  # "... before it <done>", "had not <done> after 60s"
    "pause": "paused",
    "resume": "resumed",
    "stop": "began to stop",
    "suspend": "began to suspend",
    "save": "saved",
    "stop_after_epoch": "took it",
    "go_on": "took it",
    "force": "ended",
}
POLL_S = 0.05
SEND_TIMEOUT_S = 5.0  # for the socket's answer; the effect may take longer (a step, a save)

# What in the log says the run did it: a function of an event, returning the line to print (or None).
Ack = Callable[[Event], "str | None"]


def _ack(cmd: str) -> Ack:
    def state(name: str, verb: str) -> Ack:
        def match(ev: Event) -> str | None:
            if isinstance(ev, StateChanged) and ev.state == name:
                return f"{verb} at step {ev.step}" + (f" ({ev.reason})" if ev.reason else "")
            return None

        return match

    def saved(ev: Event) -> str | None:
        if isinstance(ev, CheckpointSaved) and ev.tag == "manual":
            return f"saved {ev.path} at step {ev.step}"
        return None

    def stops_after(ev: Event) -> str | None:
        if isinstance(ev, SettingChanged) and ev.key == "stop_after_epoch" and ev.new:
            return f"stops after epoch {ev.epoch} (asked at step {ev.step})"
        return None

    def goes_on(ev: Event) -> str | None:
        if isinstance(ev, SettingChanged) and ev.key == "stop_after_epoch" and not ev.new:
            return f"goes on after epoch {ev.epoch} (asked at step {ev.step})"
        return None

    def ended(ev: Event) -> str | None:
        return f"{ev.status} at step {ev.step}" if isinstance(ev, Finished) else None

    return {
        "pause": state("paused", "paused"),
        "resume": state("running", "resumed"),
        "stop": state("stopping", "stopping"),
        "suspend": state("stopping", "suspending"),
        "save": saved,
        "stop_after_epoch": stops_after,
        "go_on": goes_on,
        "force": ended,
    }[cmd]


def already(cmd: str, model: MonitorModel) -> str | None:
    """What to print, sending nothing, when ``cmd`` is in effect already (commands say what they
    mean, so sending one again changes nothing)."""
    if cmd == "pause" and model.state == "paused":
        return f"already paused (at step {model.step})"
    if cmd == "resume" and model.state != "paused":
        return f"not paused ({model.state} at step {model.step}): nothing to resume"
    if cmd in ("stop", "suspend") and model.state == "stopping":
        return f"already stopping ({model.state_reason or 'stopped by request'})"
    if cmd == "stop_after_epoch" and model.stop_after_epoch:
        return f"already stops after epoch {model.epoch}"
    if cmd == "go_on" and not model.stop_after_epoch:
        return "not set to stop after this epoch: it goes on already"
    return None


def live_run(text: str, out_dir: Path) -> tuple[Path, int]:
    """The run directory ``text`` names, and 0 if it is live here; else the exit status, told."""
    try:
        run_dir = resolve_run(text, out_dir)
    except RunNotFound as e:
        error(str(e))
        return Path(), EXIT_USAGE
    st = run_state(run_dir)
    if not st.live:
        error(not_live_message(run_dir, st).replace("\n", " "))
        return run_dir, EXIT_NOT_LIVE
    host = st.info.get("host")
    if host and host != socket.gethostname():
        error(f"{run_dir} {st.detail}: its commands work only there (ssh {host}, then tuiloop ctl {run_dir} ...)")
        return run_dir, EXIT_NOT_LIVE
    return run_dir, 0


def send(run_dir: Path, cmd: str, timeout: float, **fields: object) -> int:
    """Send ``cmd``; 0 once the run took it, else the exit status, told."""
    try:
        send_command(run_dir, cmd, timeout=min(SEND_TIMEOUT_S, timeout), **fields)
    except ControlTimeout as e:
        error(str(e))
        return EXIT_TIMEOUT
    except ControlError as e:
        if not run_state(run_dir).live:
            error(f"{run_dir} is not live: it ended before it took {cmd!r}")
            return EXIT_NOT_LIVE
        error(str(e))
        return EXIT_USAGE if "permission denied" in str(e) or "unknown command" in str(e) else EXIT_NOT_LIVE
    return 0


class Follow:
    """The run's log from where it stood before the command was sent, one event at a time."""

    def __init__(self, run_dir: Path) -> None:
        self.tail = EventTail(run_dir, skip=("train_steps", "system_sample"))
        self.tail.skip_to_end()
        self.pending: deque[Event] = deque()

    def events(self) -> Iterator[Event]:
        """The events appended since the last call, each given once (those after a match wait their turn)."""
        self.pending.extend(self.tail.poll())
        while self.pending:
            yield self.pending.popleft()


def wait_for(run_dir: Path, log: Follow, ack: Ack, what: str, timeout: float) -> int:
    """Read the log on until ``ack`` says the run did it: print that, 0; or say why not."""
    deadline = time.monotonic() + timeout
    while True:
        gone = not run_state(run_dir).live  # looked at before the log is read: its last words are in it then
        for ev in log.events():
            said = ack(ev)
            if said is not None:
                print(said)
                return 0
            if isinstance(ev, Finished):
                error(f"{run_dir.name} ended ({ev.status}: {ev.reason}) before it {what}")
                return EXIT_NOT_LIVE
        if gone:
            if what == "ended":  # forced: gone before it could write its end
                print("ended: its process is gone")
                return 0
            error(f"{run_dir.name} is no longer live: its process ended before it {what}")
            return EXIT_NOT_LIVE
        if time.monotonic() >= deadline:
            error(
                f"{run_dir.name} took the command but had not {what} after {timeout:g}s (a long step or validation?"
                " a stopped process?); `tuiloop status` shows where it is"
            )
            return EXIT_TIMEOUT
        time.sleep(POLL_S)


def cmd_ctl(args: argparse.Namespace) -> int:
    """Send one command to a live run and wait until it has acted on it."""
    run_dir, code = live_run(args.run, args.out_dir)
    if code:
        return code
    if args.settings:
        error(
            f"ctl {args.action} takes no KEY=VALUE ({' '.join(args.settings)}); `ctl RUN set KEY=VALUE` changes settings"
        )
        return EXIT_USAGE
    cmd = ACTIONS[args.action]
    model = read_model(run_dir)
    obeyed = model.started.commands if model.started is not None else None
    if obeyed is not None and cmd not in obeyed:
        names = ", ".join(a for a, c in ACTIONS.items() if c in obeyed)
        error(
            f"{run_dir.name} is a loop of your own (tuiloop.track), which does not obey {args.action}; it obeys {names}"
        )
        return EXIT_USAGE
    said = already(cmd, model)
    if said is not None:
        print(said)
        return 0
    log = Follow(run_dir)
    code = send(run_dir, cmd, args.timeout)
    if code:
        return code
    code = wait_for(run_dir, log, _ack(cmd), DONE[cmd], args.timeout)
    if code or not args.wait or cmd not in ("stop", "suspend", "stop_after_epoch"):
        return code
    return wait_for(run_dir, log, _ack("force"), "ended", math.inf)
