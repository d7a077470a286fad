"""The data's facts: what the data function tells the model (``vocab_size``), after its splits.

A data function may return ``(train, val, facts)`` or ``(train, val, test, facts)``, ``facts`` a
dict. Each fact fills the [model] keyword argument of its name that the spec leaves out (the
spec's own value wins), as LightningCLI's ``link_arguments`` links a data module's attribute to a
model's argument; a fact that names no argument of the model is refused. The facts used are
recorded in the spec saved with the run, as [facts]: a resume, a fork or an eval of the run
checks that the data tells the same, since the checkpoint holds the weights of the model they built.
"""

from __future__ import annotations

import inspect
import math
import reprlib
from collections.abc import Mapping
from typing import Any, Callable

from tuiloop.engine.events import Message
from tuiloop.spec.errors import SpecError, did_you_mean, join_fix, type_name
from tuiloop.spec.resolve import check_kwargs, keyword_names
from tuiloop.spec.schema import Spec

_short = reprlib.Repr()
_short.maxlist, _short.maxstring, _short.maxother = 4, 40, 40
shown = _short.repr  # a fact as a message shows it: a long list or string cut short


def split_facts(data: Any) -> tuple[Any, Mapping[Any, Any] | None]:
    """(the splits, the facts or None): the facts are a dict after two or three splits."""
    if isinstance(data, (tuple, list)) and len(data) in (3, 4) and isinstance(data[-1], Mapping):
        return tuple(data[:-1]), data[-1]
    return data, None


def checked_facts(spec: Spec, facts: Mapping[Any, Any]) -> dict[str, Any]:
    """The facts as TOML values (a 0-d tensor or a NumPy scalar as its number); anything else is a
    :class:`SpecError`, since each is recorded in the run's spec.toml."""
    where, target = f"{spec.where}, [data] target", spec.data.target
    out: dict[str, Any] = {}
    for key, value in facts.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise SpecError(
                where,
                f"{target} returned a fact named {key!r}, which cannot name a keyword argument of the model",
                'Name each fact after the [model] argument it fills, for example {"vocab_size": 10000}.',
            )
        value = _plain(value)
        if not _is_toml(value):
            raise SpecError(
                where,
                f"{target} returned the fact {key} = {shown(value)} ({type_name(value)}), but a fact is recorded in "
                "the run's spec.toml, so it must be a number, a string, a boolean or a list of them",
                f'Return what the model needs as such a value (a vocabulary\'s size, not the vocabulary): {{"{key}": ...}}.',
            )
        out[key] = value
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if not isinstance(value, (bool, int, float, str)) and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()  # torch.tensor(10000), numpy.int64(10000)
    return value


def _is_toml(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_toml(v) for v in value)
    return isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value))


def model_arguments(
    spec: Spec, model: Callable[..., Any], facts: dict[str, Any]
) -> tuple[dict[str, Any], list[Message]]:
    """[model]'s keyword arguments with the facts filled in, and what to tell about them. The facts
    used are recorded in ``spec`` (its ``facts`` and its raw [facts], written to spec.toml)."""
    where, target, data = spec.where, spec.model.target, spec.data.target
    own = spec.model.kwargs
    try:
        named, takes_any = keyword_names(model, dict(inspect.signature(model).parameters))
    except (TypeError, ValueError):  # no signature to read: the call tells
        named, takes_any = list(facts), True
    unknown = [k for k in facts if k not in named and not takes_any]
    if unknown:
        listed = ", ".join(f"{k} = {shown(facts[k])}" for k in unknown)
        raise SpecError(
            f"{where}, [data] target",
            f"{data} returned the fact{'s' if len(unknown) > 1 else ''} {listed}, but {target} has no such "
            "argument: each fact fills the [model] argument of its name",
            join_fix(
                did_you_mean(unknown[0], named),
                f"{target} accepts: {', '.join(named) or 'no keyword arguments'}. Name the fact after the argument "
                f"it fills, or leave it out of what {data} returns.",
            ),
        )
    for key, was in spec.facts.items():  # a resume, fork or eval: the model the checkpoint holds
        if key in own:
            continue
        if key not in facts:
            raise SpecError(
                f"{where}, [facts] {key}",
                f"the run's model was built with {key} = {shown(was)}, a fact told by {data}, which no longer tells it",
                f"Return it from {data} again, or set it in [model] (--set model.{key}={was!r}).",
            )
        if facts[key] != was:
            raise SpecError(
                f"{where}, [facts] {key}",
                f"{data} now tells {key} = {shown(facts[key])}, but the run's model was built with "
                f"{key} = {shown(was)} (its spec.toml records it under [facts]), and the checkpoint holds that model's weights",
                "Give the data function the arguments the run had ([data] in its spec.toml), or start a new run.",
            )
    told = [
        Message("warning", f"[model] {k} = {shown(own[k])} is the spec's own, though {data} tells {k} = {shown(v)}")
        for k, v in facts.items()
        if k in own and own[k] != v
    ]
    used = {k: v for k, v in facts.items() if k not in own}
    if used:
        filled = ", ".join(f"{k} = {shown(v)}" for k, v in used.items())
        told.append(Message("info", f"the data's facts filled [model] {filled} (recorded in spec.toml as [facts])"))
    kwargs = {**own, **used}
    check_kwargs(model, "model", target, kwargs, where)
    record_facts(spec, used)
    return kwargs, told


def record_facts(spec: Spec, facts: dict[str, Any]) -> None:
    """``facts`` as the spec's [facts] (none: no [facts])."""
    spec.facts = dict(facts)
    if facts:
        spec.raw["facts"] = dict(facts)
    else:
        spec.raw.pop("facts", None)


def inherit_facts(saved: dict[str, Any], spec: Spec) -> dict[str, Any]:
    """A resume or fork with a spec of its own (the user's file, without [facts]): the run's recorded
    facts that the spec's [model] leaves out stay the run's, to be checked against the data's.
    Returns ``saved`` (the run's spec, which the resume rule compares ``spec`` with)."""
    recorded = saved.get("facts")
    if "facts" not in spec.raw and isinstance(recorded, dict):  # else the run's own spec, or one that says them
        record_facts(spec, {k: v for k, v in recorded.items() if k not in spec.model.kwargs})
    return saved
