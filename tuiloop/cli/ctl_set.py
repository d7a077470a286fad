"""``tuiloop ctl RUN set KEY=VALUE ...``: change settings of a live run from its next step.

The rule is the resume rule (``key(..., resume=True)`` in tuiloop/spec/schema.py): what may change
on resume may change live, if the loop can take it between two steps
(:func:`tuiloop.engine.live.is_live`). Keys and values are as in ``--set``: the settings are
applied to the run's saved spec and validated with it (types, ranges, did-you-mean) before anything
is sent; a key that may not change exits 2 naming it and why. The run tells each change as a
SettingChanged event, which is what this command waits for and prints.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

from tuiloop.cli.ctl import EXIT_NOT_LIVE, EXIT_TIMEOUT, Follow, live_run, send
from tuiloop.cli.say import error
from tuiloop.cli.status import read_model
from tuiloop.engine.events import Event, Message, SettingChanged
from tuiloop.engine.exits import EXIT_USAGE
from tuiloop.engine.live import is_live
from tuiloop.rundir.layout import SPEC
from tuiloop.rundir.records import read_info
from tuiloop.rundir.state import run_state
from tuiloop.spec.errors import SpecError
from tuiloop.spec.load import apply_override, tomllib, validate
from tuiloop.spec.schema import OPTIONAL, WHY, may_change


def settings_for(run_dir: Path, items: list[str]) -> dict[str, Any]:
    """The settings ``items`` (``section.key=value``) ask for, checked against the run's saved spec;
    raises :class:`SpecError` naming a key that may not change live, and why."""
    where = "tuiloop ctl set"
    try:
        saved = tomllib.loads((run_dir / SPEC).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(
            where, f"{run_dir.name} has no spec.toml (it was started from Python)", "Change it in your code."
        ) from None
    if not items:
        raise SpecError(where, "no settings given", "For example: tuiloop ctl RUN set optimizer.lr=1e-4 run.epochs=20.")
    raw = copy.deepcopy(saved)
    named: list[tuple[str, str]] = []
    for item in items:
        try:
            apply_override(raw, item)  # no such section: did-you-mean
        except SpecError as e:
            raise SpecError(e.where.replace("--set", "ctl set", 1), e.problem, e.fix) from None
        section, _, key = item.partition("=")[0].strip().partition(".")
        named.append((section, key.strip()))
    info, _ = read_info(run_dir)
    spec = validate(raw, where, Path(info.get("spec_base_dir") or run_dir))  # no such key, types, ranges
    out: dict[str, Any] = {}
    for section, key in named:
        here = f"{where}, [{section}] {key}"
        if not may_change(section, key):
            raise SpecError(
                here,
                f"it cannot change while the run trains, nor on resume: {WHY[section]}",
                "Start a new run with it.",
            )
        if section in OPTIONAL and section not in saved:
            raise SpecError(
                here,
                f"the run has no [{section}], and one cannot be added while it trains",
                f"Add it on resume: stop or suspend the run, then tuiloop run --resume {run_dir} --set {section}.{key}=...",
            )
        if not is_live(f"{section}.{key}"):
            raise SpecError(
                here,
                "it may change on resume but not live: the run reads it only when it starts",
                f"Stop or suspend the run, then: tuiloop run --resume {run_dir} --set {section}.{key}=...",
            )
        values = getattr(spec, section)
        out[f"{section}.{key}"] = values.kwargs[key] if key in getattr(values, "kwargs", {}) else getattr(values, key)
    return out


def cmd_ctl_set(args: argparse.Namespace) -> int:
    """``tuiloop ctl RUN set KEY=VALUE ...``."""
    run_dir, code = live_run(args.run, args.out_dir)
    return code or ctl_set(run_dir, args.settings, args.timeout)


def ctl_set(run_dir: Path, items: list[str], timeout: float) -> int:
    """Send the settings and wait until the run has applied each one (or refused it)."""
    model = read_model(run_dir)
    obeyed = model.started.commands if model.started is not None else None
    if obeyed is not None and "set" not in obeyed:
        error(
            f"{run_dir.name} is a loop of your own (tuiloop.track): its settings are your code's, so ctl set cannot"
            " change them; it obeys pause, resume, stop, save and force"
        )
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
