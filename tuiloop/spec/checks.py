"""Checks of single key values that a type, a list of choices or a lowest value cannot say.

Each takes ``where`` (``"spec.toml, [run] name"``) and the value, and raises :class:`SpecError`.
"""

from __future__ import annotations

import os

from tuiloop.spec.errors import SpecError, did_you_mean, join_fix

# Every metric the engine can report (tuiloop.engine.problem.metric_names); monitors must name one.
METRICS = ("train_loss", "val_loss", "val_acc", "val_mae")

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def run_name(where: str, name: str) -> None:
    """A run's name becomes part of a folder name: no separators, no '..', nothing unprintable."""
    bad = ""
    if not name.strip():
        bad = "is empty"
    elif "/" in name or "\\" in name or os.sep in name:
        bad = "contains a path separator"
    elif name in (".", "..") or name.startswith(".."):
        bad = "starts with '..'"
    elif any(not ch.isprintable() for ch in name):
        bad = "contains a control character"
    if bad:
        raise SpecError(
            where,
            f"{name!r} {bad}, and the name becomes the run directory's folder name",
            "Use letters, digits, '-', '_' and '.' (for example name = \"digits-mlp\"); put runs elsewhere with out_dir.",
        )


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
