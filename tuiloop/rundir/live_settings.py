"""Settings a live run may take (``tuiloop ctl RUN set KEY=VALUE``, the monitor's ``:`` prompt),
checked before anything is sent.

The rule is the resume rule (``key(..., resume=True)`` in tuiloop/spec/schema.py): what may change
on resume may change live, if the loop can take it between two steps
(:func:`tuiloop.engine.live.is_live`). Keys and values are as in ``--set``: the settings are
applied to the run's saved spec and validated with it (types, ranges, did-you-mean). Torch-free
and UI-free: the command line and the monitor both call it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tuiloop.engine.live import is_live
from tuiloop.rundir.layout import SPEC
from tuiloop.rundir.records import read_info
from tuiloop.spec.errors import SpecError
from tuiloop.spec.load import apply_override, tomllib, validate
from tuiloop.spec.schema import OPTIONAL_SECTIONS, WHY, may_change


def refused_by_loop(name: str, obeyed: list[str] | None) -> str:
    """Why a run's loop takes no settings (a loop of your own, ``tuiloop.track``), or ''."""
    if obeyed is None or "set" in obeyed:
        return ""
    return (
        f"{name} is a loop of your own (tuiloop.track): its settings are your code's, so they cannot"
        " change from outside; it obeys pause, resume, stop, save and force"
    )


def _same_kind(where: str, before: Any, values: Any, key: str) -> None:
    """A keyword argument the saved spec gives a number keeps a number (a string would reach the
    optimizer or the scheduler and fail there): refused here, at once."""
    new = values.kwargs.get(key) if key in getattr(values, "kwargs", {}) else None
    number = (int, float)
    if isinstance(before, number) and not isinstance(before, bool) and new is not None:
        if not isinstance(new, number) or isinstance(new, bool):
            raise SpecError(
                where,
                f"{new!r} is not a number ({key} = {before!r} in the run's spec)",
                f"For example {key}={before!r}.",
            )


def settings_for(run_dir: Path, items: list[str], where: str = "tuiloop ctl set") -> dict[str, Any]:
    """The settings ``items`` (``section.key=value``) ask for, checked against the run's saved spec;
    raises :class:`SpecError` naming a key that may not change live, and why (``where``: who asks)."""
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
            raise SpecError(e.where.replace("--set", where, 1), e.problem, e.fix) from None
        section, _, key = item.partition("=")[0].strip().partition(".")
        named.append((section, key.strip()))
        if section in OPTIONAL_SECTIONS and section not in saved:  # before validate: it would ask for a target
            raise SpecError(
                f"{where}, [{section}] {key.strip()}",
                f"the run has no [{section}], and one cannot be added while it trains",
                f"Add it on resume: stop or suspend the run, then tuiloop run --resume {run_dir} --set {item.strip()}",
            )
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
        _same_kind(here, saved.get(section, {}).get(key), getattr(spec, section), key)
        if not is_live(f"{section}.{key}"):
            raise SpecError(
                here,
                "it may change on resume but not live: the run reads it only when it starts",
                f"Stop or suspend the run, then: tuiloop run --resume {run_dir} --set {section}.{key}=...",
            )
        values = getattr(spec, section)
        out[f"{section}.{key}"] = values.kwargs[key] if key in getattr(values, "kwargs", {}) else getattr(values, key)
    return out
