"""JSON values checked against the type hints of the fields they fill.

What tuiloop reads back from a run directory (an event of the log, run.json, summary.json) may
have been damaged, cut, or written by hand: a number where a string belongs, a list where a
table does, an integer too large for any count. Each value is checked against the field's
declared type before anything uses it, so a view names what it skips instead of crashing on
it later. Integers must fit a float exactly (below 2**53): no count or size is larger.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

MAX_INT = 2**53  # the largest integer a float (and so every plot and sum of ours) holds exactly


def kind_of(value: object) -> str:
    """How a JSON value's type reads to a person."""
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


Check = Callable[[Any], str]  # what is wrong with a value ('' if nothing)


def problem(value: object, hint: Any) -> str:
    """What is wrong with ``value`` as a value of type ``hint`` ('' if nothing)."""
    return checker(hint)(value)


_CHECKERS: dict[Any, Check] = {}
_FLOAT = {float}


def checker(hint: Any) -> Check:
    """The check of values of type ``hint``, built once per type (a log holds millions of values)."""
    found = _CHECKERS.get(hint)
    if found is None:
        found = _CHECKERS[hint] = _build(hint)
    return found


def _build(hint: Any) -> Check:
    origin = typing.get_origin(hint)
    if hint is Any:
        return lambda v: ""
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        names = " or ".join(_name(o) for o in args)
        if len(args) == 2 and type(None) in args:  # X | None, nearly every union here
            inner = checker(next(a for a in args if a is not type(None)))
            return lambda v: "" if v is None or not inner(v) else f"{_wrong(v)}, not {names}"
        options = [checker(o) for o in args]
        return lambda v: "" if any(not c(v) for c in options) else f"{_wrong(v)}, not {names}"
    if hint is type(None):
        return lambda v: "" if v is None else f"{kind_of(v)}, not null"
    if hint is float:
        return lambda v: "" if type(v) is float or _small_int(v) else f"{_wrong(v)}, not a number"
    if hint is int:
        return lambda v: "" if _small_int(v) else f"{_wrong(v)}, not an integer"
    if hint in (str, bool):
        return lambda v: "" if type(v) is hint else f"{kind_of(v)}, not {_name(hint)}"
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        each = checker(item)

        def check_list(v: Any) -> str:
            if type(v) is not list:
                return f"{kind_of(v)}, not a list"
            if item is float and set(map(type, v)) <= _FLOAT:  # the common case, fast: a log's losses
                return ""
            return next((f"a list holding {p}" for x in v if (p := each(x))), "")

        return check_list
    if origin is dict:
        _, item = typing.get_args(hint) or (str, Any)
        each = checker(item)

        def check_dict(v: Any) -> str:
            if type(v) is not dict:
                return f"{kind_of(v)}, not a table"
            return next((f"a table whose {k!r} is {p}" for k, x in v.items() if (p := each(x))), "")

        return check_dict
    return lambda v: ""  # a type this check does not know: taken as it is


def _small_int(value: object) -> bool:
    return isinstance(value, int) and type(value) is not bool and -MAX_INT <= value <= MAX_INT


def _wrong(value: object) -> str:
    return "an integer too large to be a count" if type(value) is int else kind_of(value)


def _name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    names = {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}
    return names.get(hint) or {list: "a list", dict: "a table"}.get(typing.get_origin(hint), str(hint))


_FIELD_TYPES: dict[type, dict[str, Any]] = {}


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of each field of a dataclass (worked out once per class)."""
    found = _FIELD_TYPES.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = _FIELD_TYPES[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return found


def field_checks(cls: type) -> dict[str, Check]:
    """The check of each field of a dataclass."""
    return {name: checker(hint) for name, hint in field_types(cls).items()}
