"""Metrics the user chooses (the spec's ``[metrics]``): reported as ``val_<name>`` (``test_<name>``).

Two kinds, told apart by what the object has:

* an object with ``update`` / ``compute`` / ``reset`` (a torchmetrics ``Metric``, or your own
  class): updated with every batch of the split and computed once at its end;
* a function ``(outputs, targets) -> tensor``: its value on each batch, averaged over the split
  weighted by the batch's samples (exact for metrics that are means over samples).

Each metric gets what it expects for the problem (:func:`metric_inputs`): the logits as the model
returns them, integer targets for classification, ``(N,)`` rather than ``(N, 1)`` for one-logit
binary outputs. Nothing is read back to the host per batch: the function sums stay on the device.

Exact across ranks: a torchmetrics object syncs its own states at ``compute()``; function sums are
all-reduced; your own class gets every rank's batches replayed into it (a gather of its inputs).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch

from tuiloop.engine.distributed import Ranks
from tuiloop.engine.exceptions import SetupError

STATEFUL = ("update", "compute", "reset")
# tuiloop's own metrics, besides the losses: a [metrics] name may not be one of these.
BUILTIN = ("loss", "acc", "mae", "ppl")


def is_stateful(metric: object) -> bool:
    """An update/compute/reset object (torchmetrics' API)."""
    return all(callable(getattr(metric, name, None)) for name in STATEFUL)


def syncs_itself(metric: object) -> bool:
    """A torchmetrics ``Metric``: its ``compute()`` gathers every rank's state by itself."""
    return hasattr(metric, "_reductions") and callable(getattr(metric, "sync", None))


def direction(metric: object) -> str | None:
    """'max' or 'min' when the metric says which way is better (``higher_is_better``), else None."""
    better = getattr(metric, "higher_is_better", None)
    return None if not isinstance(better, bool) else ("max" if better else "min")


def _float32(t: Any) -> Any:
    """Reduced-precision outputs (autocast) as float32, which every metric takes."""
    if isinstance(t, torch.Tensor) and t.dtype in (torch.float16, torch.bfloat16):
        return t.float()
    return t


def metric_inputs(problem: str, output: Any, target: Any) -> tuple[Any, Any]:
    """(preds, target) as a metric of this problem expects them.

    | problem    | preds                          | target                          |
    |------------|--------------------------------|---------------------------------|
    | multiclass | logits (N, C)                  | class index, int64 (N,)         |
    | binary     | logits (N,)                    | 0/1, int64 (N,)                 |
    | multilabel | logits (N, L)                  | 0/1, int64 (N, L)               |
    | regression | outputs as returned            | targets as given                |
    """
    output = _float32(output)
    if not isinstance(output, torch.Tensor) or not isinstance(target, torch.Tensor):
        return output, target
    if problem == "multiclass":
        if target.is_floating_point() and target.shape == output.shape:  # one-hot / soft labels
            target = target.argmax(1)
        return output, target.long()
    if problem == "binary":
        if output.ndim == 2 and output.shape[-1] == 1:
            output = output.squeeze(-1)
        if target.ndim == 2 and target.shape[-1] == 1:
            target = target.squeeze(-1)
        return output, (target > 0.5).long() if target.is_floating_point() else target.long()
    if problem == "multilabel":
        return output, (target > 0.5).long() if target.is_floating_point() else target.long()
    return output, target


def logits_of(output: Any) -> Any:
    """The predictions in what a model that computes its own loss returned: ``output.logits``,
    ``output["logits"]``, or the one tensor of a tuple or list that is not the (scalar) loss."""
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(output, (tuple, list)):
        tensors = [t for t in output if isinstance(t, torch.Tensor) and t.ndim > 0]
        if len(tensors) == 1:
            return tensors[0]
    if isinstance(output, torch.Tensor) and output.ndim > 0:
        return output
    return None


class _Entry:
    """One metric of the set: its name and the object or function."""

    def __init__(self, name: str, metric: Any, device: torch.device) -> None:
        self.name = name
        self.stateful = is_stateful(metric)
        if not self.stateful and not callable(metric):
            raise SetupError(
                f"[metrics] {name} is a {type(metric).__name__}: a metric is an object with update, compute and reset "
                "(a torchmetrics Metric) or a function (outputs, targets) -> tensor"
            )
        if isinstance(metric, torch.nn.Module):
            metric = metric.to(device)
        self.metric = metric
        self.replay = False  # set for a stateful metric that cannot sync its own state across ranks
        self.kept: list[tuple[Any, Any]] = []  # this rank's inputs, when replayed


class MetricSet:
    """The user's metrics of a run, accumulated over one pass of a split (:meth:`start` ... :meth:`result`)."""

    def __init__(self, metrics: Mapping[str, Any], device: torch.device, ranks: Ranks) -> None:
        self.device = device
        self.ranks = ranks
        self.entries = [_Entry(name, metric, device) for name, metric in metrics.items()]
        for e in self.entries:
            e.replay = e.stateful and ranks.distributed and not syncs_itself(e.metric)
        self.functions = [e for e in self.entries if not e.stateful]
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.sums = torch.zeros(len(self.functions) + 1, dtype=dtype, device=device)  # the last: samples

    def __bool__(self) -> bool:
        return bool(self.entries)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def modes(self) -> dict[str, str]:
        """The direction of each metric that says which way is better (by its name, unprefixed)."""
        return {e.name: m for e in self.entries if (m := direction(e.metric)) is not None}

    def start(self) -> None:
        """A new pass over a split."""
        for e in self.entries:
            if e.stateful:
                e.metric.reset()
            e.kept = []
        self.sums.zero_()

    def update(self, preds: Any, target: Any, n: int) -> None:
        """One batch of ``n`` samples (``preds`` and ``target`` as :func:`metric_inputs` gives them)."""
        for i, e in enumerate(self.functions):
            self.sums[i] += torch.as_tensor(e.metric(preds, target)).detach().to(self.sums.dtype).mean() * n
        self.sums[-1] += n
        for e in self.entries:
            if e.stateful:
                e.metric.update(preds, target)
                if e.replay:
                    e.kept.append((_detached(preds), _detached(target)))

    def probe(self, preds: Any, target: Any) -> None:
        """Feed the first training batch to a copy of each metric, so a metric that cannot take what
        this problem gives fails at the first step, not after an epoch (no collective is entered)."""
        for e in self.entries:
            try:
                if e.stateful:
                    copy.deepcopy(e.metric).update(_detached(preds), _detached(target))
                else:
                    torch.as_tensor(e.metric(_detached(preds), _detached(target)))
            except Exception as err:
                raise SetupError(
                    f"[metrics] {e.name} failed on the first batch: {type(err).__name__}: {err}. "
                    f"tuiloop hands it {describe_inputs(preds, target)}; fix the metric's arguments in [metrics] "
                    "(the table of what a metric receives for each problem is in docs/spec.md)"
                ) from err

    def result(self, prefix: str) -> dict[str, float]:
        """Each metric's value over the whole split (every rank's samples), as ``<prefix><name>``."""
        sums = self.ranks.sum_(self.sums.clone()).tolist() if self.functions else []
        values: dict[str, float] = {}
        count = sums[-1] if sums else 0.0
        for i, e in enumerate(self.functions):
            values[e.name] = sums[i] / count if count else math.nan
        for e in self.entries:
            if e.stateful:
                if e.replay:
                    self._replay(e)
                values[e.name] = _number(e.name, e.metric.compute())
                e.metric.reset()
        return {prefix + e.name: values[e.name] for e in self.entries}

    def _replay(self, e: _Entry) -> None:
        """Every rank's batches into this rank's object, so each computes the whole split's value."""
        everyone = self.ranks.gather([(_cpu(p), _cpu(t)) for p, t in e.kept])
        e.metric.reset()
        for batches in everyone:
            for preds, target in batches:
                e.metric.update(_to(preds, self.device), _to(target, self.device))
        e.kept = []


def _detached(t: Any) -> Any:
    return t.detach() if isinstance(t, torch.Tensor) else t


def _cpu(t: Any) -> Any:
    return t.detach().cpu() if isinstance(t, torch.Tensor) else t


def _to(t: Any, device: torch.device) -> Any:
    return t.to(device) if isinstance(t, torch.Tensor) else t


def _number(name: str, value: Any) -> float:
    """A metric's computed value as one float, or a SetupError that says what came back."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach().float().item())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    what = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"
    raise SetupError(
        f"[metrics] {name}: compute() returned {what}, not one number; "
        'give it arguments that make one value (for torchmetrics, average = "macro" instead of average = "none")'
    )


def describe_inputs(preds: Any, target: Any) -> str:
    """'preds float32 (16, 3) and targets int64 (16,)'."""

    def one(t: Any) -> str:
        if isinstance(t, torch.Tensor):
            return f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}"
        return "None" if t is None else type(t).__name__

    return f"preds {one(preds)} and targets {one(target)}"
