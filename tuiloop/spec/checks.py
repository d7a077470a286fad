"""Checks of single key values that a type, a list of choices or a lowest value cannot say.

Each takes ``where`` (``"spec.toml, [run] name"``) and the value, and raises :class:`SpecError`.
"""

from __future__ import annotations

import math
import os
from typing import Any

from tuiloop.spec.errors import SpecError, did_you_mean, join_fix

# Every metric the engine can report (tuiloop.engine.problem.metric_names); monitors must name one.
METRICS = ("train_loss", "val_loss", "val_acc", "val_mae")

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


# What torch (torch.manual_seed) and TOML take as an integer: a signed 64-bit one.
INT64 = (-(2**63), 2**63 - 1)
NAME_CHARACTERS = "letters, digits, '-', '_' and '.'"


def number(where: str, value: int | float, fix: str) -> None:
    """Every number key: a float is finite (no nan or inf), an integer fits in 64 bits."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(where, f"must be a finite number, got {value}", fix)
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        raise SpecError(where, f"must be a 64-bit integer, from {INT64[0]} to {INT64[1]}, got {value}", fix)


def finite_kwargs(where: str, section: str, kwargs: dict[str, Any]) -> None:
    """The numbers among a torch target's keyword arguments (lr, betas, ...) are finite."""
    for name, value in kwargs.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise SpecError(
                    f"{where}, [{section}] {name}",
                    f"must be a finite number, got {value}",
                    f"nan and inf have no meaning as a setting of [{section}]; write a number, such as lr = 0.001.",
                )


def _bad_character(name: str) -> str:
    for ch in name:
        if ch in "/\\" or ch == os.sep:
            return "contains a path separator"
        if not ch.isprintable():
            return "contains a control character"
        if ch.isspace():
            return "contains a space"
        if not (ch.isalnum() or ch in "-_."):
            return f"contains {ch!r}"
    return ""


def run_name(where: str, name: str) -> None:
    """A run's name becomes part of a folder name: letters, digits, '-', '_' and '.', not
    starting with '.' (a hidden folder; '.' and '..' are the folder itself and its parent)."""
    if not name.strip():
        bad = "is empty"
    else:
        dots = {".": "is the name of a folder's own entry", "..": "is the name of a folder's parent entry"}
        bad = _bad_character(name) or dots.get(name) or ("starts with '.'" if name.startswith(".") else "")
    if bad:
        raise SpecError(
            where,
            f"{name!r} {bad}, and the name becomes the run directory's folder name",
            f"Use {NAME_CHARACTERS}, not starting with '.' (for example name = \"digits-mlp\"); put runs elsewhere with out_dir.",
        )


def default_run_name(stem: str) -> str:
    """The name of a run whose spec gives none: its file's stem, made a valid name ('my spec' -> 'my-spec')."""
    name = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in stem).lstrip(".")
    return name or "run"


def nproc(where: str, value: int | str) -> None:
    """A number of processes, or "auto"."""
    if (isinstance(value, str) and value != "auto") or (isinstance(value, int) and value < 1):
        raise SpecError(
            where,
            f'must be a number of processes (1 or more) or "auto", got {value!r}',
            'For example nproc_per_node = 4, or "auto" for one per visible GPU.',
        )


def metric(where: str, value: str) -> None:
    """A monitor names a metric the engine reports."""
    if value not in METRICS:
        raise SpecError(
            where,
            f"{value!r} is not a metric tuiloop reports",
            join_fix(
                did_you_mean(value, METRICS),
                f"Use one of {', '.join(METRICS)} (val_acc for classification, val_mae for regression).",
            ),
        )


def compile_mode(where: str, value: bool | str) -> None:
    """``compile`` is true, false or a torch.compile mode."""
    if isinstance(value, str) and value not in COMPILE_MODES:
        raise SpecError(
            where,
            f"{value!r} is not a torch.compile mode",
            join_fix(
                did_you_mean(value, COMPILE_MODES), f"Use true, false, or one of {', '.join(map(repr, COMPILE_MODES))}."
            ),
        )
