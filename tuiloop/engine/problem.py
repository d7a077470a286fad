"""Problem type, first-batch checks of outputs against targets, and validation metrics.

| problem     | loss                          | target            | metric                 |
|-------------|-------------------------------|-------------------|------------------------|
| multiclass  | CrossEntropyLoss, NLLLoss     | long class index  | acc (argmax)           |
| binary      | BCEWithLogitsLoss (1 output)  | float 0/1         | acc (logit > 0)        |
| multilabel  | BCEWithLogitsLoss (N outputs) | float 0/1 each    | acc (per label)        |
| regression  | MSE / L1 / Huber / SmoothL1   | float             | mae                    |

A cross-entropy (CrossEntropyLoss, NLLLoss, or a model that computes its own loss) also reports
``ppl = exp(loss)``, the perplexity of a language model.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tuiloop.engine.exceptions import SetupError

MULTICLASS = ("CrossEntropyLoss", "NLLLoss")
BCE = ("BCEWithLogitsLoss", "BCELoss")
REGRESSION = ("MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss")
CROSS_ENTROPY = ("CrossEntropyLoss", "NLLLoss")


def loss_name(loss_fn: object) -> str:
    return type(loss_fn).__name__


def infer_problem(loss_fn: object, output: torch.Tensor) -> str:
    name = loss_name(loss_fn)
    if name in MULTICLASS:
        return "multiclass"
    if name in BCE:
        return "binary" if output.ndim == 1 or output.shape[-1] == 1 else "multilabel"
    if name in REGRESSION:
        return "regression"
    return "other"


def metric_names(problem: str, prefix: str = "val_") -> list[str]:
    """The validation metrics reported for a problem type, besides the losses."""
    names = {"multiclass": ["acc"], "binary": ["acc"], "multilabel": ["acc"], "regression": ["mae"]}.get(problem, [])
    return [prefix + n for n in names]


def has_perplexity(loss_fn: object, model_computes_loss: bool = False) -> bool:
    """A cross-entropy loss (or a model's own, a language model's as a rule): ppl = exp(loss) is reported."""
    return model_computes_loss or loss_name(loss_fn) in CROSS_ENTROPY


def reported_metrics(
    problem: str | None, validated: bool, perplexity: bool = False, user: tuple[str, ...] | list[str] = ()
) -> list[str]:
    """Every metric a run reports: train_loss, and with a validation split val_loss, the problem's own,
    val_ppl for a cross-entropy and val_<name> of each metric of [metrics]."""
    if not validated:
        return ["train_loss"]
    return ["train_loss", *split_metrics(problem, perplexity, user, "val_")]


def split_metrics(problem: str | None, perplexity: bool, user: tuple[str, ...] | list[str], prefix: str) -> list[str]:
    """The metrics of one evaluated split (val_ or test_): its loss, the problem's own, ppl, the user's."""
    ppl = [prefix + "ppl"] if perplexity else []
    return [prefix + "loss", *metric_names(problem or "", prefix), *ppl, *(prefix + n for n in user)]


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_batch(loss_fn: object, output: object, target: object, problem: str) -> list[str]:
    """Check the first batch; raise :class:`SetupError` for mistakes, return warnings for doubts."""
    name = loss_name(loss_fn)
    if not isinstance(output, torch.Tensor) or not isinstance(target, torch.Tensor):
        return []
    warnings: list[str] = []
    out, y = output.detach(), target.detach()
    if problem == "multiclass":
        if out.ndim < 2:
            raise SetupError(
                f"{name} needs outputs of shape (batch, classes), but the model returned {_shape(out)}. Make the final layer nn.Linear(..., num_classes)."
            )
        classes = out.shape[1]
        weight = getattr(loss_fn, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.numel() != classes:
            raise SetupError(
                f"{name}'s weight ([loss] weight in a spec) has {weight.numel()} values, but the model outputs {classes} class scores. "
                f"Give one weight per class ({classes} numbers), or make the final layer {weight.numel()} outputs if there are that many classes."
            )
        if y.is_floating_point() and y.shape != out.shape:
            raise SetupError(
                f"{name} needs class indices of dtype torch.long (int64) as targets, but they are {y.dtype} with shape {_shape(y)}. "
                "Return the targets as long from your data function, e.g. torch.as_tensor(labels, dtype=torch.long) or y.long()."
            )
        if not y.is_floating_point():
            if classes == 1:
                raise SetupError(
                    f"the model has 1 output but {name} needs one output per class (1 output always gives loss 0). For two classes use 2 outputs, or BCEWithLogitsLoss with float 0/1 targets."
                )
            valid = y[y != getattr(loss_fn, "ignore_index", -100)]
            if valid.numel():
                lo, hi = int(valid.min()), int(valid.max())
                if lo < 0 or hi >= classes:
                    bad = hi if hi >= classes else lo
                    raise SetupError(
                        f"the model outputs {classes} class scores but the targets contain class {bad} (targets range {lo}..{hi}). "
                        f"Set the final layer to {hi + 1} outputs (the number of classes), or map the labels to 0..{classes - 1}."
                    )
        if name == "CrossEntropyLoss" and out.numel() and bool(((out >= 0) & (out <= 1)).all()):
            sums = out.sum(dim=1)
            if bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-3)):
                warnings.append(
                    "the outputs look like softmax probabilities (in [0, 1], rows sum to 1), but CrossEntropyLoss applies log-softmax itself. Return raw logits: remove the softmax from the model's forward."
                )
    elif problem in ("binary", "multilabel"):
        if not y.is_floating_point():
            raise SetupError(
                f"{name} needs float targets (0.0 / 1.0), but they are {y.dtype}. Convert them in your data function with y.float()."
            )
        pos_weight = getattr(loss_fn, "pos_weight", None)
        if isinstance(pos_weight, torch.Tensor) and out.ndim and pos_weight.numel() not in (1, out.shape[-1]):
            raise SetupError(
                f"{name}'s pos_weight ([loss] pos_weight in a spec) has {pos_weight.numel()} values, but the model has {out.shape[-1]} outputs. "
                f"Give one number for every output (pos_weight = 3.0) or one per output ({out.shape[-1]} numbers)."
            )
        if out.shape != y.shape:
            hint = ""
            if out.ndim == y.ndim + 1 and out.shape[-1] == 1:
                hint = " Make the targets (batch, 1) with y.unsqueeze(1), or squeeze the output with out.squeeze(1)."
            raise SetupError(
                f"{name} needs outputs and targets of the same shape, but the model returned {_shape(out)} and the targets are {_shape(y)}.{hint}"
            )
        if y.numel() and bool(((y < 0) | (y > 1)).any()):
            raise SetupError(
                f"{name} needs targets between 0 and 1, but they range {float(y.min()):g}..{float(y.max()):g}. For class indices use CrossEntropyLoss instead."
            )
        if name == "BCEWithLogitsLoss" and out.numel() > 1 and bool(((out > 0) & (out < 1)).all()):
            warnings.append(
                "all outputs lie in (0, 1), as if a sigmoid were already applied, but BCEWithLogitsLoss applies it itself. Return raw logits: remove the sigmoid from the model's forward."
            )
        if name == "BCELoss" and out.numel() and bool(((out < 0) | (out > 1)).any()):
            raise SetupError(
                "BCELoss needs probabilities in [0, 1], but the outputs leave that range. Use BCEWithLogitsLoss on raw outputs instead (it is also numerically safer)."
            )
    elif problem == "regression":
        if out.shape != y.shape:
            hint = (
                " Make the targets (batch, 1) with y.unsqueeze(1), or squeeze the output with out.squeeze(1)."
                if out.ndim == y.ndim + 1 and out.shape[-1] == 1
                else ""
            )
            raise SetupError(
                f"{name} needs outputs and targets of the same shape, but the model returned {_shape(out)} and the targets are {_shape(y)}; "
                f"PyTorch would broadcast them and train on the wrong loss.{hint}"
            )
        if not y.is_floating_point():
            raise SetupError(
                f"{name} needs float targets, but they are {y.dtype}. Convert them in your data function with y.float()."
            )
    return warnings


def check_inputs(model: torch.nn.Module, args: tuple[object, ...], kwargs: dict[str, object]) -> str:
    """Why the first forward failed, where PyTorch's own message does not name the fix ('' if unknown).

    The classic case: float64 inputs (from NumPy) against a float32 model.
    """
    param = next(iter(model.parameters()), None)
    if param is None or not param.is_floating_point():
        return ""
    inputs = [*args, *kwargs.values()]
    tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
    other = {t.dtype for t in tensors if t.is_floating_point() and t.dtype != param.dtype}
    if not other:
        return ""
    dtype = sorted(map(str, other))[0]
    return (
        f"the inputs are {dtype} but the model's parameters are {param.dtype}. "
        "Convert the inputs in your data function: x.float(), or torch.as_tensor(X, dtype=torch.float32) for NumPy arrays."
    )


def sum_dtype(device: torch.device) -> torch.dtype:
    """The dtype of the validation sums: float64, where the device has it (MPS has no float64)."""
    return torch.float32 if device.type == "mps" else torch.float64


class MetricTotals:
    """Validation sums kept on the device; one sync at :meth:`result`."""

    def __init__(
        self, problem: str, loss_fn: object, device: torch.device, perplexity: bool = False, prefix: str = "val_"
    ) -> None:
        self.problem = problem
        self.perplexity = perplexity
        self.prefix = prefix
        self.probabilities = loss_name(loss_fn) == "BCELoss"
        self.ignore_index = getattr(loss_fn, "ignore_index", -100)
        zero = torch.zeros((), dtype=sum_dtype(device), device=device)
        self.loss_sum, self.metric_sum, self.loss_count, self.metric_count = zero.clone(), zero.clone(), 0, zero.clone()
        self.classes: torch.Tensor | None = None  # samples per class (classification), for the majority's share
        self.majority: float | None = None  # after result(): the share of the most common class

    def add(self, loss: torch.Tensor, output: object, target: object, n: int) -> None:
        """One batch of ``n`` samples: its mean loss, and what the metric needs of its outputs."""
        self.loss_sum += loss.detach() * n
        self.loss_count += n
        if not isinstance(output, torch.Tensor) or not isinstance(target, torch.Tensor):
            return
        if self.problem == "multiclass":
            pred = output.argmax(1)
            if target.is_floating_point():
                target = target.argmax(1)
            keep = target != self.ignore_index
            self.metric_sum += ((pred == target) & keep).sum()
            self.metric_count += keep.sum()
            if target.ndim == 1:  # per sample (not per token of a sequence): count the classes
                self._count_classes(torch.where(keep, target, 0), keep, output.shape[1])
        elif self.problem in ("binary", "multilabel"):
            pred = output > (0.5 if self.probabilities else 0.0)
            self.metric_sum += (pred == (target > 0.5)).sum()
            self.metric_count += target.numel()
            if self.problem == "binary":
                self._count_classes((target > 0.5).long().flatten(), None, 2)
        elif self.problem == "regression":
            self.metric_sum += (output.detach() - target).abs().sum()
            self.metric_count += target.numel()

    def _count_classes(self, labels: torch.Tensor, keep: torch.Tensor | None, classes: int) -> None:
        counts = torch.bincount(
            labels.flatten(),
            weights=None if keep is None else keep.flatten().to(self.loss_sum.dtype),
            minlength=classes,
        )
        if self.classes is None:
            self.classes = torch.zeros(classes, dtype=self.loss_sum.dtype, device=self.loss_sum.device)
        if counts.numel() == self.classes.numel():  # out-of-range labels: check_batch refuses them at the first batch
            self.classes += counts.to(self.classes.dtype)

    def result(self, ranks: Any = None) -> dict[str, float]:
        """The metrics; in a distributed run the sums of every rank's shard (each sample once)."""
        parts = [
            self.loss_sum,
            torch.as_tensor(float(self.loss_count), dtype=self.loss_sum.dtype, device=self.loss_sum.device),
            self.metric_sum,
            self.metric_count.to(self.loss_sum.dtype),
        ]
        sums = torch.cat([torch.stack(parts), self.classes if self.classes is not None else parts[0].new_zeros(0)])
        if ranks is not None:
            ranks.sum_(sums)
        values = sums.tolist()
        loss_sum, loss_count, metric_sum, metric_count = values[:4]
        counts = values[4:]
        self.majority = max(counts) / sum(counts) if counts and sum(counts) else None
        if not loss_count:  # an iterable split that gave nothing: no check, never a perfect score of nothing
            raise SetupError(
                "the validation data gave no batch; return None as the validation split to train without validation"
            )
        loss = loss_sum / loss_count
        out = {self.prefix + "loss": loss}
        names = metric_names(self.problem, self.prefix)
        if names:
            out[names[0]] = metric_sum / max(metric_count, 1.0)
        if self.perplexity:
            out[self.prefix + "ppl"] = math.inf if loss > 709 else math.exp(loss)  # exp overflows a float past 709
        return out
