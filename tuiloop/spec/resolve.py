"""Resolving a spec's targets to Python objects, and checking keyword arguments against them.

A target is a name in torch (``"AdamW"``, ``"CrossEntropyLoss"``, ``"StepLR"``), a module
attribute (``"package.module:attr"``) or a file attribute (``"models.py:MLP"``, relative to
the spec file's folder).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import tuiloop.spec.userfiles as userfiles
from tuiloop.engine.origin import error_text, user_frames
from tuiloop.spec.errors import SpecError, did_you_mean, join_fix
from tuiloop.spec.schema import SCHEMA, MetricSpec, Spec, TargetSpec

# Arguments tuiloop passes itself, by section: the user must not set them.
SUPPLIED = {"optimizer": ("params",), "scheduler": ("optimizer",), "model": (), "loss": (), "data": ()}
# [data] keys a data target may also accept (then they are passed on).
DATA_PASSTHROUGH = ("batch_size", "val_batch_size", "num_workers", "seed")


@dataclass
class Resolved:
    """Everything a spec names, imported and checked, ready for the engine to build."""

    spec: Spec
    model: Callable[..., Any]
    data: Callable[..., Any]
    loss: Callable[..., Any] | None  # None: the model computes its own loss ([loss] target = "model")
    optimizer: Callable[..., Any]
    scheduler: Callable[..., Any] | None
    metrics: dict[str, Callable[..., Any]] = field(default_factory=dict)  # [metrics]: name -> class or function


def _torch_namespace(section: str) -> tuple[Any, str, Callable[[Any], bool]]:
    import torch  # lazy: keeps torch out of ls, show and the monitor, which load tuiloop.spec

    if section == "loss":
        return (
            torch.nn,
            "torch.nn",
            lambda o: isinstance(o, type) and issubclass(o, torch.nn.Module) and o.__name__.endswith("Loss"),
        )
    if section == "optimizer":
        return torch.optim, "torch.optim", lambda o: isinstance(o, type) and issubclass(o, torch.optim.Optimizer)
    if section == "scheduler":
        sch = torch.optim.lr_scheduler
        base = getattr(sch, "LRScheduler", None) or sch._LRScheduler
        return (
            sch,
            "torch.optim.lr_scheduler",
            lambda o: isinstance(o, type) and (issubclass(o, base) or o is sch.ReduceLROnPlateau),
        )
    return None, "", lambda o: False


def _import_file(file: Path, where: str, target: str) -> Any:
    try:
        return userfiles.import_file(file)
    except (Exception, SystemExit) as e:  # a script that calls sys.exit() (argparse, say) on import
        raise SpecError(
            where,
            f"importing {file} (target = {target!r}) raised {describe_exception(e)}",
            "Fix that file; run it with python to see the full traceback, or pass --debug.",
        ) from e


def describe_exception(e: BaseException) -> str:
    """'TypeError: ... (models.py, line 12)' for the innermost frame in user code."""
    user = user_frames(e)
    loc = f" ({Path(user[-1].filename).name}, line {user[-1].lineno})" if user else ""
    if isinstance(e, SyntaxError) and e.filename:
        loc = f" ({Path(e.filename).name}, line {e.lineno})"
        return f"SyntaxError: {e.msg}{loc}"
    return f"{error_text(e)}{loc}"


def resolve_target(
    section: str, target: str, base_dir: Path, where: str, here: str | None = None
) -> Callable[..., Any]:
    """Import the object a target string names; raises :class:`SpecError` explaining what failed.
    ``here`` names the key in the message (default: ``[section] target``)."""
    here = here or f"{where}, [{section}] target"
    if ":" not in target:
        namespace, ns_name, accepts = _torch_namespace(section)
        if namespace is None:
            example = f' (for example "torchmetrics.classification:{target}")' if section == "metrics" else ""
            raise SpecError(
                here,
                f"{target!r} does not say where {target} lives",
                f'Write "file.py:{target}" (relative to the spec file) or "package.module:{target}"{example}.',
            )
        obj = getattr(namespace, target, None)
        if obj is not None and accepts(obj):
            return obj
        names = sorted(n for n in dir(namespace) if not n.startswith("_") and accepts(getattr(namespace, n)))
        raise SpecError(
            here,
            f"{target!r} is not {'an' if section[0] in 'aeiou' else 'a'} {section} in {ns_name}",
            join_fix(did_you_mean(target, names), f'Use a {ns_name} class name or "module:attr" for your own.'),
        )
    module_part, _, attr = target.rpartition(":")
    if not module_part or not attr:
        raise SpecError(
            here,
            f"{target!r} is not of the form 'module:attr' or 'file.py:attr'",
            'For example target = "models.py:MLP".',
        )
    if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
        file = (base_dir / module_part).resolve()
        if not file.is_file():
            siblings = [p.name for p in file.parent.glob("*.py")] if file.parent.is_dir() else []
            raise SpecError(
                here,
                f"no file {file} (file targets are relative to the spec file's folder {base_dir})",
                join_fix(did_you_mean(file.name, siblings), "Check the file name."),
            )
        module = _import_file(file, here, target)
    else:
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as e:
            if e.name and module_part.startswith(e.name):
                install = "pip install 'tuiloop[metrics]'" if e.name == "torchmetrics" else "Install it"
                raise SpecError(
                    here,
                    f"no module named {e.name!r} (from target = {target!r})",
                    f'{install}, or for a file next to the spec write "{module_part.replace(".", "/")}.py:{attr}".',
                ) from None
            raise SpecError(
                here, f"importing {module_part} raised {describe_exception(e)}", "Install the missing package."
            ) from e
        except (Exception, SystemExit) as e:
            raise SpecError(
                here,
                f"importing {module_part} raised {describe_exception(e)}",
                "Fix that module, or pass --debug for the traceback.",
            ) from e
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            raise SpecError(
                here,
                f"{module_part} has no attribute {part!r}",
                join_fix(did_you_mean(part, names), "Check the name after the colon."),
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise SpecError(here, f"{target!r} is not a class or function", "Point target at something tuiloop can call.")
    return obj


def check_kwargs(
    fn: Callable[..., Any],
    section: str,
    target: str,
    kwargs: dict[str, Any],
    where: str,
    supplied: tuple[str, ...] = (),
    here: str | None = None,
    complete: bool = True,
) -> None:
    """Every key must be a parameter of ``fn`` and, when ``complete``, every required parameter must
    be given (the model's are checked again once the data's facts are in). ``here`` names the
    section in messages (default: ``[section]``)."""
    try:
        params = dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return  # builtins without a signature: let the call tell
    for name in supplied:
        params.pop(name, None)
    named, takes_any = keyword_names(fn, params)
    ours = [k for k in SCHEMA.get(section, {}) if k != "target"]
    at = here or f"[{section}]"
    for key, value in kwargs.items():
        if key in supplied:
            raise SpecError(
                f"{where}, {at} {key}",
                f"tuiloop passes {key} to {target} itself",
                f"Remove {key} from {at}.",
            )
        if key not in named and not takes_any:
            own = f" tuiloop's own keys of [{section}]: {', '.join(ours)}." if ours else ""
            raise SpecError(
                f"{where}, {at} {key}",
                f"{key!r} is not a parameter of {target}",
                join_fix(
                    did_you_mean(key, [*named, *ours]),
                    f"{target} accepts: {', '.join(named) or 'no keyword arguments'}.{own}",
                ),
            )
        param = params.get(key)
        default = param.default if param is not None else None
        if isinstance(value, str) and isinstance(default, (int, float)) and not isinstance(default, bool):
            raise SpecError(
                f"{where}, {at} {key}",
                f"{key} was read as the string {value!r}, but {target} expects a number (its default is {default!r})",
                f"Write a number without quotes, e.g. {key} = {default!r}.",
            )
    for name, p in params.items() if complete else ():
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in kwargs:
            add = f'{at.split("] ")[-1]} = {{ target = "{target}", {name} = ... }}' if here else f"{name} = ... to {at}"
            if section == "model":
                add += f' (or have the data function return it as a fact: (train, val, {{"{name}": ...}}))'
            raise SpecError(
                f"{where}, {at}",
                f"{target} needs {name!r}, which has no default",
                f"Add {add}.",
            )


def keyword_names(fn: Callable[..., Any], params: dict[str, inspect.Parameter]) -> tuple[list[str], bool]:
    """(the keyword arguments ``fn`` names, whether it takes any other) from its ``params``."""
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if takes_any and isinstance(fn, type) and (passed_on := _init_parameters(fn)) is not None:
        takes_any, named = False, passed_on  # a class whose **kwargs go to known bases (torchmetrics' Metric)
    return named, takes_any


# What torchmetrics' Metric.__init__ takes through **kwargs (it refuses anything else).
METRIC_BASE_KWARGS = (
    "compute_on_cpu", "dist_sync_on_step", "process_group", "dist_sync_fn", "distributed_available_fn",
    "sync_on_compute", "compute_with_cache",
)  # fmt: skip


def _init_parameters(cls: type) -> list[str] | None:
    """The keyword arguments a class takes when its ``**kwargs`` only go on to its bases: the named
    parameters of each ``__init__`` up the MRO, to torchmetrics' ``Metric`` (whose own are known);
    None when some base takes anything."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass.__name__ == "Metric" and klass.__module__.startswith("torchmetrics"):
            return [*names, *METRIC_BASE_KWARGS]
        try:
            params = list(inspect.signature(init).parameters.values())[1:]  # without self
        except (TypeError, ValueError):
            return None
        names += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return None


def data_kwargs(spec: Spec, fn: Callable[..., Any]) -> dict[str, Any]:
    """The data target's kwargs, plus batch_size/val_batch_size/num_workers/seed when it asks for them."""
    kwargs = dict(spec.data.kwargs)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kwargs
    values = {
        "batch_size": spec.data.batch_size,
        "val_batch_size": spec.data.val_batch_size or spec.data.batch_size,
        "num_workers": spec.data.num_workers,
        "seed": spec.run.seed,
    }
    for key in DATA_PASSTHROUGH:
        if key in params and key not in kwargs:
            kwargs[key] = values[key]
    return kwargs


def resolve(spec: Spec) -> Resolved:
    """Import every target of ``spec`` and check its keyword arguments."""
    where = spec.where
    out: dict[str, Any] = {}
    sections: list[TargetSpec] = [spec.model, spec.data, spec.loss, spec.optimizer]
    if spec.scheduler is not None:
        sections.append(spec.scheduler)
    for sec in sections:
        if sec.section == "loss" and sec.target == "model":
            out["loss"] = None
            continue
        fn = resolve_target(sec.section, sec.target, spec.base_dir, where)
        kwargs = data_kwargs(spec, fn) if sec.section == "data" else sec.kwargs
        # the model's missing arguments may come from the data's facts: checked when they are in
        check_kwargs(fn, sec.section, sec.target, kwargs, where, SUPPLIED[sec.section], complete=sec.section != "model")
        out[sec.section] = fn
    metrics = {name: resolve_metric(spec, m) for name, m in spec.metrics.items()}
    return Resolved(spec, out["model"], out["data"], out.get("loss"), out["optimizer"], out.get("scheduler"), metrics)


def resolve_metric(spec: Spec, metric: MetricSpec) -> Callable[..., Any]:
    """Import one [metrics] target and check its keyword arguments: a class's against its
    constructor, a function's against what follows its (outputs, targets)."""
    here = f"[metrics] {metric.name}"
    fn = resolve_target("metrics", metric.target, spec.base_dir, spec.where, f"{spec.where}, {here}")
    supplied: tuple[str, ...] = ()
    if not isinstance(fn, type):  # a function: tuiloop passes the first two arguments
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            params = []
        positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if params and len(positional) < 2 and not any(p.kind is p.VAR_POSITIONAL for p in params):
            raise SpecError(
                f"{spec.where}, {here}",
                f"{metric.target} takes {len(positional)} positional argument(s), but a metric function is called "
                "as fn(outputs, targets)",
                "Give it the signature (outputs, targets) -> tensor, or point at a class with update/compute/reset.",
            )
        supplied = tuple(positional[:2])
    check_kwargs(fn, "metrics", metric.target, metric.kwargs, spec.where, supplied, here)
    return fn
