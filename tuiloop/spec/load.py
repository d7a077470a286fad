"""Reading a spec: TOML text -> ``--set`` overrides -> strict structural validation -> :class:`Spec`."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import tomli_w

import tuiloop.spec.checks as checks
from tuiloop.engine.best import default_mode
from tuiloop.spec.errors import SpecError, did_you_mean, join_fix, type_name
from tuiloop.spec.keys import NUMBER, Key
from tuiloop.spec.schema import (
    KWARG_SECTIONS,
    NAMED_SECTIONS,
    OPTIONAL_SECTIONS,
    REQUIRED_SECTIONS,
    SCHEMA,
    SECTIONS,
    MetricSpec,
    Spec,
    TargetSpec,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def load_spec(path: str | Path, overrides: list[str] | None = None) -> Spec:
    """Read and validate a spec file; raises :class:`SpecError` with a one-paragraph message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(
            str(path), "no such spec file", "Check the path; specs are TOML files such as demos/digits.toml."
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(str(path), f"cannot read the spec file ({e})") from None
    return parse_spec(text, path=path, overrides=overrides)


def parse_spec(
    text: str,
    path: Path | None = None,
    overrides: list[str] | None = None,
    base_dir: Path | None = None,
) -> Spec:
    """Validate spec text; ``base_dir`` (default: the spec's folder) resolves file targets."""
    where = str(path) if path else "spec"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(
            where,
            f"not valid TOML: {e}",
            "Fix the syntax at that line (strings need quotes, tables look like [section]).",
        ) from None
    for item in overrides or []:
        apply_override(raw, item)
    if base_dir is None:
        base_dir = path.resolve().parent if path else Path.cwd()
    return validate(raw, where, base_dir, path)


def parse_value(text: str) -> Any:
    """A ``--set`` value as TOML (``3``, ``1e-3``, ``true``, ``"x"``, ``[1, 2]``); bare words stay strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``section.key=value`` override in place."""
    key, sep, value = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise SpecError(
            f"--set {item}",
            "an override must look like section.key=value",
            "For example: --set optimizer.lr=3e-4 or --set run.device=cpu.",
        )
    if section not in SCHEMA:
        raise SpecError(
            f"--set {item}",
            f"there is no section [{section}]",
            join_fix(did_you_mean(section, SCHEMA), f"Sections: {', '.join(SCHEMA)}."),
        )
    table = raw.setdefault(section, {})
    if not isinstance(table, dict):
        raise SpecError(f"--set {item}", f"[{section}] is not a table in the spec")
    table[name.strip()] = parse_value(value.strip())


def _check_type(where: str, section: str, key: str, value: Any, types: tuple[type, ...]) -> None:
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if ok:
        return
    want = "a number" if types == NUMBER else " or ".join(type_name(t()) for t in types)
    example = (
        _meant(value, types) or {int: "1", float: "0.001", str: '"text"', bool: "true", list: '["text"]'}[types[0]]
    )
    raise SpecError(
        f"{where}, [{section}] {key}",
        f"expected {want}, got {value!r} ({type_name(value)})",
        f"Write it as, for example, {key} = {example}.",
    )


def _meant(value: Any, types: tuple[type, ...]) -> str | None:
    """The TOML the user probably meant: "60" -> 60, "1e-3" -> 0.001, "true" -> true, 5 -> "5"."""
    if isinstance(value, str):
        parsed = parse_value(value.strip())
        if (
            isinstance(parsed, types)
            and not isinstance(parsed, str)
            and not (isinstance(parsed, bool) and bool not in types)
        ):
            return tomli_w.dumps({"v": parsed}).partition("=")[2].strip()
        return None
    if str in types and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'"{value}"'
    return None


def section_values(name: str, table: dict[str, Any], where: str) -> dict[str, Any]:
    """One section's keys from ``table``, checked as declared, with defaults filled in."""
    return _section({name: table}, name, where)


def _section(raw: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    """One section's keys, checked as declared, with defaults filled in; unknown keys are errors unless they are kwargs."""
    table = raw.get(name, {})
    keys = SCHEMA[name]
    out: dict[str, Any] = {}
    for k, value in table.items():
        if k in keys:
            _check_type(where, name, k, value, keys[k].types)
            _check_choice(where, keys[k], value)
            out[k] = value
        elif name not in KWARG_SECTIONS:
            raise SpecError(
                f"{where}, [{name}] {k}",
                f"'{k}' is not a key of [{name}]",
                join_fix(did_you_mean(k, keys), f"Keys of [{name}]: {', '.join(keys)}."),
            )
    for k, declared in keys.items():
        if k not in out:
            if declared.required:
                raise SpecError(
                    f"{where}, [{name}]",
                    f"the required key '{k}' is missing",
                    f'Add {k} = "..." to [{name}]; see the spec reference in docs/spec.md.',
                )
            out[k] = declared.default
    for k, declared in keys.items():
        if out[k] is not None:
            out[k] = _check_value(f"{where}, [{name}] {k}", declared, out[k])
    return out


def _check_choice(where: str, declared: Key, value: Any) -> None:
    choices = declared.choices
    if choices and value not in choices:
        alias = declared.aliases.get(str(value).lower()) if declared.aliases else None
        raise SpecError(
            f"{where}, [{declared.section}] {declared.name}",
            f"{value!r} is not one of {', '.join(map(repr, choices))}",
            f'Did you mean "{alias}"?' if alias else did_you_mean(value, choices),
        )


def _check_value(here: str, declared: Key, value: Any) -> Any:
    """A number's range (finite, 64-bit), the key's lowest value and its own check; a number
    key's value as a float."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        example = declared.default if isinstance(declared.default, (int, float)) else 1
        checks.number(here, value, f"For example {declared.name} = {example}.")
    if declared.low and (problem := declared.low.problem(value)):
        raise SpecError(here, problem, declared.low.fix)
    if declared.check:
        declared.check(here, value)
    return float(value) if declared.is_float else value


def _kwargs(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in raw.get(name, {}).items() if k not in SCHEMA[name]}


def validate(raw: dict[str, Any], where: str, base_dir: Path, path: Path | None = None) -> Spec:
    """Check sections, keys, types, choices and ranges; fill defaults. Targets are resolved later."""
    raw = copy.deepcopy(raw)
    for name, table in raw.items():
        if name not in SCHEMA:
            raise SpecError(
                f"{where}, [{name}]",
                f"'{name}' is not a section of a tuiloop spec",
                join_fix(did_you_mean(name, SCHEMA), f"Sections: {', '.join('[' + s + ']' for s in SCHEMA)}."),
            )
        if not isinstance(table, dict):
            raise SpecError(
                f"{where}, {name}",
                f"'{name}' must be a table ([{name}]), got {type_name(table)}",
                f"Write it as a section header [{name}] with keys below it.",
            )
    for name in REQUIRED_SECTIONS:
        if name not in raw:
            raise SpecError(
                where,
                f"the required section [{name}] is missing",
                f'Add [{name}] with target = "..."; see the spec reference in docs/spec.md.',
            )
    # the saved spec keeps the run's name
    raw.setdefault("run", {}).setdefault("name", checks.default_run_name(path.stem) if path else "run")
    values = {
        name: _section(raw, name, where)
        for name in SECTIONS
        if (name in raw or name not in OPTIONAL_SECTIONS) and name not in NAMED_SECTIONS
    }
    metrics = _metrics(raw.get("metrics", {}), where)

    # what follows from other keys: the modes from the monitors, the checkpoint's monitor from early stopping's
    es = values.get("early_stopping")
    if es is not None:
        es["explicit_mode"] = es["mode"] is not None
        es["mode"] = es["mode"] or default_mode(es["monitor"])
    c = values["checkpoint"]
    c["explicit_monitor"] = c["monitor"] is not None
    c["explicit_mode"] = c["mode"] is not None
    c["monitor"] = c["monitor"] or (es["monitor"] if es else "val_loss")
    c["mode"] = c["mode"] or (es["mode"] if es and es["monitor"] == c["monitor"] else default_mode(c["monitor"]))
    # a monitor names a metric the run can report ([checkpoint]'s follows early stopping's: that one is named first)
    sch = values.get("scheduler")
    for name, table in (("early_stopping", es), ("scheduler", sch), ("checkpoint", c)):
        if table is not None and table.get("monitor") is not None and (name != "checkpoint" or c["explicit_monitor"]):
            checks.monitor(f"{where}, [{name}] monitor", table["monitor"], list(metrics))

    if raw["loss"].get("target") == "model" and _kwargs(raw, "loss"):
        extra = next(iter(_kwargs(raw, "loss")))
        raise SpecError(
            f"{where}, [loss] {extra}",
            '[loss] target = "model" takes the loss from the model, so [loss] has no other keys',
            f"Remove {extra} from [loss] (give it to your model in [model]).",
        )

    for name in values:
        if SECTIONS[name].finite_kwargs:
            checks.finite_kwargs(where, name, _kwargs(raw, name))

    sections: dict[str, Any] = dict.fromkeys(OPTIONAL_SECTIONS)
    for name, v in values.items():
        cls = SECTIONS[name].keys
        sections[name] = cls(section=name, kwargs=_kwargs(raw, name), **v) if issubclass(cls, TargetSpec) else cls(**v)
    sections["metrics"] = metrics
    sections["facts"] = dict(raw.get("facts", {}))
    return Spec(path=path, base_dir=base_dir, raw=raw, **sections)


def _metrics(table: dict[str, Any], where: str) -> dict[str, MetricSpec]:
    """[metrics]: each entry a target string, or an inline table with target and keyword arguments."""
    out: dict[str, MetricSpec] = {}
    for name, value in table.items():
        here = f"{where}, [metrics] {name}"
        checks.metric_name(here, name)
        if isinstance(value, str):
            target, kwargs = value, {}
        elif isinstance(value, dict):
            kwargs = dict(value)
            target = kwargs.pop("target", None)
            if not isinstance(target, str):
                raise SpecError(
                    here,
                    "the table has no target string" if target is None else f"target must be a string, got {target!r}",
                    f'Write {name} = {{ target = "module:attr", ... }}, e.g. '
                    f'{name} = {{ target = "torchmetrics.classification:MulticlassAccuracy", num_classes = 10 }}.',
                )
        else:
            raise SpecError(
                here,
                f"expected a target string or an inline table, got {value!r} ({type_name(value)})",
                f'Write {name} = "module:attr" (e.g. "torchmetrics.classification:BinaryF1Score"), '
                f'or {name} = {{ target = "module:attr", keyword = value }}.',
            )
        if not target.strip():
            raise SpecError(here, "the target is empty", 'Write "module:attr" or "file.py:attr".')
        checks.finite_kwargs(where, "metrics", kwargs)
        out[name] = MetricSpec(name, target, kwargs)
    return out
