"""``tuiloop ctl RUN set KEY=VALUE ...``: change settings of a live run from its next step.

The rule is the resume rule (``key(..., resume=True)`` in tuiloop/spec/schema.py): what may change
on resume may change live, if the loop can take it between two steps
(:func:`tuiloop.engine.live.is_live`). Keys and values are as in ``--set``: the settings are
checked against the run's saved spec (:func:`tuiloop.rundir.live_settings.settings_for`, which the
monitor's ``:`` prompt calls too) before anything is sent; a key that may not change exits 2
naming it and why. The run tells each change as a
SettingChanged event, which is what this command waits for and prints.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from tuiloop.cli.ctl import EXIT_NOT_LIVE, EXIT_TIMEOUT, Follow, live_run, send
from tuiloop.cli.say import error
from tuiloop.cli.status import read_model
from tuiloop.engine.events import Event, Message, SettingChanged
from tuiloop.engine.exits import EXIT_USAGE
from tuiloop.rundir.live_settings import refused_by_loop, settings_for
from tuiloop.rundir.state import run_state
from tuiloop.spec.errors import SpecError


def cmd_ctl_set(args: argparse.Namespace) -> int:
    """``tuiloop ctl RUN set KEY=VALUE ...``."""
    run_dir, code = live_run(args.run, args.out_dir)
    return code or ctl_set(run_dir, args.settings, args.timeout)


def ctl_set(run_dir: Path, items: list[str], timeout: float) -> int:
    """Send the settings and wait until the run has applied each one (or refused it)."""
    model = read_model(run_dir)
    refused = refused_by_loop(run_dir.name, model.started.commands if model.started is not None else None)
    if refused:
        error(refused)
        return EXIT_USAGE
    try:
        settings = settings_for(run_dir, items)
    except SpecError as e:
        error(str(e))
        return EXIT_USAGE
    log = Follow(run_dir)
    code = send(run_dir, "set", timeout, settings=settings)
    if code:
        return code
    return _wait_applied(run_dir, log, settings, timeout)


def _wait_applied(run_dir: Path, log: Follow, settings: dict[str, Any], timeout: float) -> int:
    waiting, refused = set(settings), False
    deadline = time.monotonic() + timeout
    while waiting:
        gone = not run_state(run_dir).live  # looked at before the log is read: its last words are in it then
        for ev in log.events():
            key = _answered(ev, waiting)
            if key is None:
                continue
            waiting.discard(key)
            if isinstance(ev, SettingChanged):
                print(f"{key}: {ev.old!r} -> {ev.new!r} from step {ev.step + 1}")
            else:
                refused = True
                error(ev.text if isinstance(ev, Message) else key)
        if waiting and gone:
            error(f"{run_dir.name} ended before it applied {', '.join(sorted(waiting))}")
            return EXIT_NOT_LIVE
        if waiting and time.monotonic() >= deadline:
            error(
                f"{run_dir.name} took the settings but had not applied {', '.join(sorted(waiting))} after {timeout:g}s"
            )
            return EXIT_TIMEOUT
        if waiting:
            time.sleep(0.05)
    return EXIT_USAGE if refused else 0


def _answered(ev: Event, waiting: set[str]) -> str | None:
    """The key ``ev`` applies (a SettingChanged from ctl set) or refuses (a warning), if one of ``waiting``."""
    if isinstance(ev, SettingChanged) and ev.source == "ctl set" and ev.key in waiting:
        return ev.key
    if isinstance(ev, Message) and ev.text.startswith("could not set "):
        key = ev.text.removeprefix("could not set ").split(" ", 1)[0]
        return key if key in waiting else None
    return None
