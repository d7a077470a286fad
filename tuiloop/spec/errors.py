"""Spec errors: one paragraph that says what was wrong, where, and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SpecError(Exception):
    """A problem with the user's spec; the CLI prints ``str(err)`` and exits with status 2."""

    def __init__(self, where: str, problem: str, fix: str = "") -> None:
        self.where = where
        self.problem = problem
        self.fix = fix
        text = f"{where}: {problem}" if where else problem
        if fix:
            text = f"{text.rstrip('.')}. {fix}"
        super().__init__(text)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    if name.lower() in lowered:
        return f"Did you mean '{lowered[name.lower()]}'?"
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if not close:
        close = [lowered[c] for c in difflib.get_close_matches(name.lower(), lowered, n=1, cutoff=0.6)]
    return f"Did you mean '{close[0]}'?" if close else ""


def join_fix(*parts: str) -> str:
    """Join non-empty fix sentences."""
    return " ".join(p.strip() for p in parts if p and p.strip())


def type_name(value: object) -> str:
    """How a TOML value's type reads to a user."""
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def from_override(err: SpecError, overrides: Iterable[str]) -> SpecError:
    """The same error, saying which ``--set`` gave the bad value (the file does not show it)."""
    for item in reversed(list(overrides)):  # the last --set of a key is the one that counts
        key = item.partition("=")[0].strip()
        section, _, name = key.partition(".")
        if name and err.where.endswith(f"[{section}] {name}"):
            return SpecError(f"{err.where} (from --set {item})", err.problem, err.fix)
    return err
