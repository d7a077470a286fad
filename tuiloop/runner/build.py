"""Building an engine :class:`Trainer` from a resolved spec: seed, device, model, data, loss, optimizer.

The glue between the spec and the engine: spec mistakes found while building are
:class:`SpecError`; the engine itself never sees the spec.
"""

from __future__ import annotations

import functools
import inspect
import random
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset

from tuiloop.engine.batches import Batches
from tuiloop.engine.best import MetricMonitor
from tuiloop.engine.compiling import CompileError
from tuiloop.engine.device import DeviceError, resolve_device
from tuiloop.engine.distributed import SINGLE, Ranks
from tuiloop.engine.events import Message
from tuiloop.engine.metrics import direction, is_stateful
from tuiloop.engine.precision import PrecisionError
from tuiloop.engine.trainer import Options, Trainer
from tuiloop.runner.facts import checked_facts, model_arguments, split_facts
from tuiloop.spec.errors import SpecError, type_name
from tuiloop.spec.resolve import Resolved, data_kwargs, describe_exception

Progress = Callable[[str], None]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy (if present) and torch (all devices)."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np  # lazy: optional dependency (seeded if present)

        np.random.seed(seed % (1 << 32))
    except ImportError:
        pass


def _call(where: str, section: str, target: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except (Exception, SystemExit) as e:  # sys.exit() in the user's factory too
        shown = ", ".join(f"{k}={v.tolist() if isinstance(v, torch.Tensor) else v!r}" for k, v in kwargs.items())
        raise SpecError(
            f"{where}, [{section}]",
            f"building {target}({shown}) raised {describe_exception(e)}",
            f"Fix the arguments in [{section}] or the code of {target}; pass --debug for the traceback.",
        ) from e


def _tensor_kwargs(
    where: str, section: str, target: str, fn: Callable[..., Any], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """``kwargs`` with the numbers and lists given for tensor arguments of ``fn`` made float32 tensors.

    A tensor argument is one annotated ``Tensor`` or ``Optional[Tensor]``, as ``pos_weight`` and
    ``weight`` of torch's losses are: TOML has no tensors, and torch refuses a float for a buffer.
    """
    wanted = _tensor_parameters(fn)
    out = dict(kwargs)
    for key in wanted & kwargs.keys():
        value = kwargs[key]
        if not _numbers(value):
            raise SpecError(
                f"{where}, [{section}] {key}",
                f"{target} takes a tensor as {key}, made from a number or a list of numbers, got {value!r} ({type_name(value)})",
                f"Write it as, for example, {key} = 2.0 or {key} = [1.0, 2.0].",
            )
        try:
            out[key] = torch.tensor(value, dtype=torch.float32)
        except ValueError as e:  # a ragged list
            raise SpecError(
                f"{where}, [{section}] {key}",
                f"{key} = {value!r} does not make a tensor ({e})",
                "Give every inner list the same length.",
            ) from None
    return out


def _numbers(value: Any) -> bool:
    """A number, or a (nested) list of numbers; booleans are not numbers here."""
    if isinstance(value, list):
        return bool(value) and all(_numbers(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _tensor_parameters(fn: Callable[..., Any]) -> set[str]:
    """The parameters of ``fn`` annotated ``Tensor`` or ``Optional[Tensor]``."""
    try:
        params = inspect.signature(fn, eval_str=True).parameters
    except Exception:  # an annotation that names what its module cannot evaluate: read them as written
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            return set()
    return {name for name, p in params.items() if _is_tensor_type(p.annotation)}


def _is_tensor_type(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return re.fullmatch(r"(Optional\[)?(torch\.)?Tensor\]?( *\| *None)?", annotation.strip()) is not None
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(rest) and all(a is torch.Tensor for a in rest)
    return annotation is torch.Tensor


def _check_split(where: str, value: Any, name: str, target: str) -> None:
    if value is None and name in ("val", "test"):
        return
    here = f"{where}, [data] target"
    if isinstance(value, (tuple, list)) and value and all(_is_array(v) for v in value):
        kinds = " and ".join(sorted({_array_kind(v) for v in value}))
        raise SpecError(
            here,
            f"{target} returned a {type(value).__name__} of {len(value)} {kinds} as the {name} split, not a Dataset",
            "Wrap the arrays in a TensorDataset: TensorDataset(torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y)), "
            "and return (train, val) as two such datasets.",
        )
    if (
        not isinstance(value, (Dataset, DataLoader))
        and not hasattr(value, "__getitem__")
        and not hasattr(value, "__iter__")
    ):
        raise SpecError(
            here,
            f"{target} returned a {type(value).__name__} as the {name} split, not a Dataset or DataLoader",
            "Return (train, val) as torch Datasets (e.g. TensorDataset) or DataLoaders.",
        )


def _is_array(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or (
        hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "__array__")
    )


def _array_kind(value: Any) -> str:
    return "tensors" if isinstance(value, torch.Tensor) else f"{type(value).__module__.split('.')[0]} arrays"


def build_metrics(resolved: Resolved) -> dict[str, Any]:
    """The objects of [metrics]: a class built with its keyword arguments, a function given them."""
    spec = resolved.spec
    out: dict[str, Any] = {}
    for name, target in resolved.metrics.items():
        entry = spec.metrics[name]
        if isinstance(target, type):
            try:
                metric = target(**entry.kwargs)
            except Exception as e:
                shown = ", ".join(f"{k}={v!r}" for k, v in entry.kwargs.items())
                raise SpecError(
                    f"{spec.where}, [metrics] {name}",
                    f"building {entry.target}({shown}) raised {describe_exception(e)}",
                    f"Fix the arguments of {name} in [metrics]; pass --debug for the traceback.",
                ) from e
        else:
            metric = functools.partial(target, **entry.kwargs) if entry.kwargs else target
        if not is_stateful(metric) and not callable(metric):
            raise SpecError(
                f"{spec.where}, [metrics] {name}",
                f"{entry.target} built a {type(metric).__name__}, which is neither a metric object nor a function",
                "Point it at a class with update, compute and reset (a torchmetrics Metric) "
                "or a function (outputs, targets) -> tensor.",
            )
        out[name] = metric
    return out


def build_trainer(
    resolved: Resolved, run_dir: Path | None = None, progress: Progress = lambda phase: None, ranks: Ranks = SINGLE
) -> Trainer:
    """Make every object the spec names and wire them into a Trainer; ``progress`` hears each phase.

    In a distributed run (``ranks``) each process trains on its own GPU (cuda:LOCAL_RANK) or the
    CPU, on its shard of the data.
    """
    spec = resolved.spec
    where = spec.where
    seed_everything(spec.run.seed)
    try:
        device = resolve_device(spec.run.device)
        if ranks.distributed and device.type == "cuda":
            device = ranks.device()
    except DeviceError as e:
        raise SpecError(f"{where}, [run] device", str(e)) from None

    progress("loading the data")
    data, facts = split_facts(_call(where, "data", spec.data.target, resolved.data, **data_kwargs(spec, resolved.data)))
    if not (isinstance(data, (tuple, list)) and len(data) in (2, 3)):
        got = (
            f"a {type(data).__name__} of {len(data)} items"
            if isinstance(data, (tuple, list))
            else f"a {type(data).__name__}"
        )
        raise SpecError(
            f"{where}, [data] target",
            f"{spec.data.target} must return (train, val) or (train, val, test), got {got}",
            "Return Datasets or DataLoaders: a pair, or three with a test split evaluated at the end; val may be None "
            "(and after them a dict of facts for [model], if any).",
        )
    train_data, val_data, test_data = (*data, None) if len(data) == 2 else data
    model_kwargs, told = model_arguments(spec, resolved.model, checked_facts(spec, facts or {}))

    progress("building the model")
    seed_everything(spec.run.seed)  # the model's weights do not depend on what the data function drew
    model = _call(where, "model", spec.model.target, resolved.model, **model_kwargs)
    if not isinstance(model, torch.nn.Module):
        raise SpecError(
            f"{where}, [model] target",
            f"{spec.model.target} returned a {type(model).__name__}, not a torch.nn.Module",
            "Point target at an nn.Module subclass or a function that returns one.",
        )
    model = model.to(device)

    _check_split(where, train_data, "train", spec.data.target)
    _check_split(where, val_data, "val", spec.data.target)
    _check_split(where, test_data, "test", spec.data.target)
    if ranks.distributed:  # the same weights and the same data split everywhere (a random_split on
        seed_everything(spec.run.seed + ranks.rank)  # the global RNG), then each rank's own random draws

    progress("building the loss, optimizer and scheduler")
    if resolved.loss is None:
        loss_fn: Any = "model"
    else:
        kwargs = _tensor_kwargs(where, "loss", spec.loss.target, resolved.loss, spec.loss.kwargs)
        loss_fn = _call(where, "loss", spec.loss.target, resolved.loss, **kwargs)
        if isinstance(loss_fn, torch.nn.Module):
            loss_fn = loss_fn.to(device)
    optimizer = _call(
        where, "optimizer", spec.optimizer.target, resolved.optimizer, model.parameters(), **spec.optimizer.kwargs
    )
    scheduler = None
    if spec.scheduler is not None and resolved.scheduler is not None:
        scheduler = _call(
            where, "scheduler", spec.scheduler.target, resolved.scheduler, optimizer, **spec.scheduler.kwargs
        )
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and spec.scheduler.interval == "step":
            raise SpecError(
                f"{where}, [scheduler] interval",
                "ReduceLROnPlateau steps on a validation metric, so it cannot step every batch",
                'Set interval = "epoch".',
            )

    d = spec.data
    batches: dict[str, Any] = dict(
        device=device, num_workers=d.num_workers, pin_memory=d.pin_memory, seed=spec.run.seed,
        persistent_workers=d.persistent_workers, multiprocessing_context=d.multiprocessing_context,
        rank=ranks.rank, world_size=ranks.world_size,
    )  # fmt: skip
    try:
        train = Batches(train_data, batch_size=d.batch_size, shuffle=d.shuffle, drop_last=d.drop_last, **batches)
        val, test = (
            Batches(split, batch_size=d.val_batch_size or d.batch_size, shuffle=False, even_shards=False, **batches)
            if split is not None
            else None
            for split in (val_data, test_data)
        )
    except ValueError as e:  # a DataLoader that cannot be sharded
        raise SpecError(f"{where}, [data] target", str(e)) from None
    if why := train.empty():
        raise SpecError(
            f"{where}, [data] target",
            f"{spec.data.target} returned an empty training split ({why})",
            "Check what it loads (a path or a filter that matched nothing?); training needs at least one batch.",
        )
    no_val = ""
    if val is not None and (why := val.empty()):  # no validation, never a perfect score of nothing
        no_val = f"{spec.data.target} returned an empty validation split ({why}): training without validation"
        val = None

    metrics = build_metrics(resolved)
    # a metric that says which way is better (torchmetrics' higher_is_better) decides a mode the spec leaves out
    own = {f"val_{name}": way for name, m in metrics.items() if (way := direction(m)) is not None}
    es = spec.early_stopping
    es_mode = (es.mode if es.explicit_mode else own.get(es.monitor, es.mode)) if es else "min"
    monitor, mode = spec.checkpoint.monitor, spec.checkpoint.mode
    if not spec.checkpoint.explicit_mode:
        mode = es_mode if es and es.monitor == monitor else own.get(monitor, mode)
    if val is None and not spec.checkpoint.explicit_monitor:
        # no validation split: the best checkpoint follows what there is (early stopping's monitor, else the train loss)
        monitor = es.monitor if es else "train_loss"
        mode = es_mode if es else "min"
    options = Options(
        **spec.loop_options(),  # every key declared with an Options field (tuiloop/spec/schema.py)
        monitor=monitor,
        mode=mode,
        early_stopping=MetricMonitor(es.monitor, es_mode, es.min_delta, es.patience) if es else None,
    )
    if spec.train.compile:
        progress("preparing torch.compile")
    try:
        trainer = Trainer(
            model, train, val, loss_fn, optimizer, scheduler, options, device, run_dir, ranks, metrics, test
        )
    except PrecisionError as e:
        raise SpecError(f"{where}, [train] precision", str(e)) from None
    except CompileError as e:
        raise SpecError(f"{where}, [train] compile", str(e)) from None
    trainer.announcements += told
    if no_val:
        trainer.announcements.append(Message("warning", no_val))
    return trainer
