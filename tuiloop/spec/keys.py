"""How a spec key is declared: once, as a field of its section's dataclass (tuiloop/spec/schema.py).

The field's name is the key's name, its annotation the key's type, and :func:`key` holds the
rest: the default, the choices or the lowest value, whether it may change on ``--resume``, the
engine ``Options`` field it feeds, and one line of help (the pattern of Hugging Face's
``TrainingArguments``). The schema, the defaults, the checks, the mapping onto the engine's
``Options`` and what a resume may change are all read from there.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from tuiloop.engine.options import Options

NUMBER = (int, float)
_META = "tuiloop.key"
_OPTION_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Options)}


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()  # the default of a key the spec must give


@dataclass(frozen=True)
class Bound:
    """The lowest value a number key may take, and the sentence that says how to fix one below it."""

    low: int | float
    fix: str
    above: bool = False  # the value must be above ``low``, not merely at least ``low``
    unit: str = ""  # what the number counts ("seconds"), for the message

    def problem(self, value: int | float) -> str | None:
        """What is wrong with ``value``, or None when it is in range."""
        if value > self.low or (value == self.low and not self.above):
            return None
        if self.above:
            return "must be a positive number" + (f" of {self.unit}" if self.unit else "")
        if self.low == 0:
            return "cannot be negative"
        return f"must be at least {self.low}, got {value}"


def at_least(low: int, fix: str) -> Bound:
    """An integer key of ``low`` or more."""
    return Bound(low, fix)


def not_negative(fix: str) -> Bound:
    """A key of 0 or more."""
    return Bound(0, fix)


def positive(fix: str, unit: str = "") -> Bound:
    """A key above 0."""
    return Bound(0, fix, above=True, unit=unit)


Check = Callable[[str, Any], None]  # (where, value): raises SpecError; only called on a set value


@dataclass(frozen=True)
class Key:
    """One spec key, as declared; ``types`` are the TOML types it accepts (read from the annotation)."""

    section: str
    name: str
    types: tuple[type, ...]
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    aliases: Mapping[str, str] | None = None  # what users write for a choice -> the choice (for the hint)
    low: Bound | None = None
    check: Check | None = None
    resume: bool = False  # may change when a run is resumed
    option: str | None = None  # the engine Options field that takes its value

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def is_float(self) -> bool:
        return self.types == NUMBER


_UNSET: Any = object()


def key(
    default: Any = _UNSET,
    *,
    help: str,
    option: str | None = None,
    resume: bool = False,
    choices: tuple[str, ...] = (),
    aliases: Mapping[str, str] | None = None,
    low: Bound | None = None,
    check: Check | None = None,
) -> Any:
    """Declare a spec key as a dataclass field.

    Without ``default``, a key that feeds an ``Options`` field (``option``) takes that field's
    default, so the spec and the Python API start from the same values.
    """
    if default is _UNSET:
        if option is None:
            raise TypeError("a key that feeds no Options field needs a default")
        default = _OPTION_DEFAULTS[option]
    if option is not None and option not in _OPTION_DEFAULTS:
        raise TypeError(f"Options has no field {option!r}")
    declared = Key("", "", (), default, help, choices, aliases, low, check, resume, option)  # keys_of names it
    if isinstance(default, list):  # an array key: each instance gets its own copy
        return dataclasses.field(default_factory=lambda: list(default), metadata={_META: declared})
    return dataclasses.field(default=default, metadata={_META: declared})


def _toml_types(annotation: Any) -> tuple[type, ...]:
    """``int | None`` -> (int,); ``float`` -> (int, float): the TOML values a key accepts."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        parts = [a for a in typing.get_args(annotation) if a is not type(None)]
    else:
        parts = [annotation]
    out: list[type] = []
    for part in parts:
        part = typing.get_origin(part) or part  # list[str] -> list (its items: the key's own check)
        out.extend(NUMBER if part is float else (part,))
    return tuple(out)


def keys_of(section: str, cls: type) -> dict[str, Key]:
    """The keys a section dataclass declares, in declaration order (fields without :func:`key` are not keys)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Key] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_META)
        if meta is None:
            continue
        out[f.name] = dataclasses.replace(meta, section=section, name=f.name, types=_toml_types(hints[f.name]))
    return out
