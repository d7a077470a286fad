"""Reading a spec: TOML text -> ``--set`` overrides -> strict structural validation -> :class:`Spec`."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any

import tomli_w

from tuiloop.engine.monitor import default_mode
from tuiloop.spec.errors import SpecError, did_you_mean, join_fix, type_name
from tuiloop.spec.schema import (
    CHOICES,
    COMPILE_MODES,
    KWARG_SECTIONS,
    METRICS,
    NUMBER,
    PRECISION_ALIASES,
    REQUIRED,
    REQUIRED_SECTIONS,
    SCHEMA,
    CheckpointSpec,
    DataSpec,
    EarlyStoppingSpec,
    RunSpec,
    SchedulerSpec,
    Spec,
    TargetSpec,
    TrainSpec,
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


def _check_type(where: str, section: str, key: str, value: Any, expected: Any) -> None:
    types = expected if isinstance(expected, tuple) else (expected,)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if ok:
        return
    want = "a number" if types == NUMBER else " or ".join(type_name(t()) for t in types)
    example = _meant(value, types) or {int: "1", float: "0.001", str: '"text"', bool: "true"}[types[0]]
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


def _section(raw: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    """One section's keys with defaults filled in; unknown keys are errors unless they are kwargs."""
    table = raw.get(name, {})
    schema = SCHEMA[name]
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key in schema:
            _check_type(where, name, key, value, schema[key][0])
            if (name, key) in CHOICES and value not in CHOICES[(name, key)]:
                choices = CHOICES[(name, key)]
                alias = PRECISION_ALIASES.get(str(value).lower()) if key == "precision" else None
                raise SpecError(
                    f"{where}, [{name}] {key}",
                    f"{value!r} is not one of {', '.join(map(repr, choices))}",
                    f'Did you mean "{alias}"?' if alias else did_you_mean(value, choices),
                )
            out[key] = value
        elif name not in KWARG_SECTIONS:
            raise SpecError(
                f"{where}, [{name}] {key}",
                f"'{key}' is not a key of [{name}]",
                join_fix(did_you_mean(key, schema), f"Keys of [{name}]: {', '.join(schema)}."),
            )
    for key, (_, default) in schema.items():
        if key not in out:
            if default is REQUIRED:
                raise SpecError(
                    f"{where}, [{name}]",
                    f"the required key '{key}' is missing",
                    f'Add {key} = "..." to [{name}]; see the spec reference in README.md.',
                )
            out[key] = default
    return out


def _check_name(where: str, name: str) -> None:
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
            f"{where}, [run] name",
            f"{name!r} {bad}, and the name becomes the run directory's folder name",
            "Use letters, digits, '-', '_' and '.' (for example name = \"digits-mlp\"); put runs elsewhere with out_dir.",
        )


def _check_monitor(where: str, section: str, value: str | None) -> None:
    if value is not None and value not in METRICS:
        raise SpecError(
            f"{where}, [{section}] monitor",
            f"{value!r} is not a metric tuiloop reports",
            join_fix(
                did_you_mean(value, METRICS),
                f"Use one of {', '.join(METRICS)} (val_acc for classification, val_mae for regression).",
            ),
        )


def _kwargs(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in raw.get(name, {}).items() if k not in SCHEMA[name]}


def validate(raw: dict[str, Any], where: str, base_dir: Path, path: Path | None = None) -> Spec:
    """Check sections, keys, types and choices; fill defaults. Targets are resolved later."""
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
                f'Add [{name}] with target = "..."; see the spec reference in README.md.',
            )

    run = _section(raw, "run", where)
    if run["name"] is None:
        run["name"] = path.stem if path else "run"
        raw.setdefault("run", {})["name"] = run["name"]  # the saved spec keeps the run's name
    _check_name(where, run["name"])
    for key in ("epochs", "val_every"):
        if run[key] < 1:
            raise SpecError(f"{where}, [run] {key}", f"must be at least 1, got {run[key]}", f"Set {key} = 1 or more.")
    nproc = run["nproc_per_node"]
    if (isinstance(nproc, str) and nproc != "auto") or (isinstance(nproc, int) and nproc < 1):
        raise SpecError(
            f"{where}, [run] nproc_per_node",
            f'must be a number of processes (1 or more) or "auto", got {nproc!r}',
            'For example nproc_per_node = 4, or "auto" for one per visible GPU.',
        )
    if run["log_interval"] <= 0:
        raise SpecError(
            f"{where}, [run] log_interval", "must be a positive number of seconds", "For example log_interval = 0.25."
        )

    data = _section(raw, "data", where)
    for key in ("batch_size", "val_batch_size"):
        if data[key] is not None and data[key] < 1:
            raise SpecError(
                f"{where}, [data] {key}", f"must be at least 1, got {data[key]}", f"Set {key} = 32, for example."
            )
    if data["num_workers"] < 0:
        raise SpecError(f"{where}, [data] num_workers", "cannot be negative", "Use 0 to load in the training process.")

    es = None
    if "early_stopping" in raw:
        e = _section(raw, "early_stopping", where)
        if e["patience"] < 1:
            raise SpecError(
                f"{where}, [early_stopping] patience",
                f"must be at least 1, got {e['patience']}",
                "Remove [early_stopping] to train for all epochs.",
            )
        if e["min_delta"] < 0:
            raise SpecError(
                f"{where}, [early_stopping] min_delta",
                "cannot be negative",
                "It is the smallest improvement that counts, e.g. 0.001.",
            )
        _check_monitor(where, "early_stopping", e["monitor"])
        es = EarlyStoppingSpec(
            e["monitor"], e["mode"] or default_mode(e["monitor"]), e["patience"], float(e["min_delta"])
        )

    c = _section(raw, "checkpoint", where)
    _check_monitor(where, "checkpoint", c["monitor"])
    monitor = c["monitor"] or (es.monitor if es else "val_loss")
    mode = c["mode"] or (es.mode if es and es.monitor == monitor else default_mode(monitor))
    if c["every_n_epochs"] < 0:
        raise SpecError(
            f"{where}, [checkpoint] every_n_epochs", "cannot be negative", "Use 0 to turn periodic checkpoints off."
        )
    checkpoint = CheckpointSpec(
        c["best"], c["last"], c["every_n_epochs"], monitor, mode, explicit_monitor=c["monitor"] is not None
    )

    t = _section(raw, "train", where)
    if t["accumulate_grad_batches"] < 1:
        raise SpecError(
            f"{where}, [train] accumulate_grad_batches",
            f"must be at least 1, got {t['accumulate_grad_batches']}",
            "Use 1 to step the optimizer after every batch.",
        )
    if t["gradient_clip_val"] < 0:
        raise SpecError(
            f"{where}, [train] gradient_clip_val",
            "cannot be negative",
            "Use 0 to turn clipping off, or a positive limit such as 1.0.",
        )
    if isinstance(t["compile"], str) and t["compile"] not in COMPILE_MODES:
        raise SpecError(
            f"{where}, [train] compile",
            f"{t['compile']!r} is not a torch.compile mode",
            join_fix(
                did_you_mean(t["compile"], COMPILE_MODES),
                f"Use true, false, or one of {', '.join(map(repr, COMPILE_MODES))}.",
            ),
        )
    train = TrainSpec(**{**t, "gradient_clip_val": float(t["gradient_clip_val"])})
    if "loss" in raw and raw["loss"].get("target") == "model" and _kwargs(raw, "loss"):
        extra = next(iter(_kwargs(raw, "loss")))
        raise SpecError(
            f"{where}, [loss] {extra}",
            '[loss] target = "model" takes the loss from the model, so [loss] has no other keys',
            f"Remove {extra} from [loss] (give it to your model in [model]).",
        )

    sched = None
    if "scheduler" in raw:
        s = _section(raw, "scheduler", where)
        _check_monitor(where, "scheduler", s["monitor"])
        sched = SchedulerSpec(
            "scheduler", s["target"], _kwargs(raw, "scheduler"), interval=s["interval"], monitor=s["monitor"]
        )

    return Spec(
        path=path,
        base_dir=base_dir,
        raw=raw,
        run=RunSpec(**{**run, "log_interval": float(run["log_interval"])}),
        model=TargetSpec("model", _section(raw, "model", where)["target"], _kwargs(raw, "model")),
        data=DataSpec("data", data.pop("target"), _kwargs(raw, "data"), **data),
        loss=TargetSpec("loss", _section(raw, "loss", where)["target"], _kwargs(raw, "loss")),
        optimizer=TargetSpec("optimizer", _section(raw, "optimizer", where)["target"], _kwargs(raw, "optimizer")),
        scheduler=sched,
        early_stopping=es,
        checkpoint=checkpoint,
        train=train,
    )
