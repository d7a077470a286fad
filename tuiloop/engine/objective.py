"""How a batch becomes a loss: a loss function on ``(inputs, targets)``, or a model that computes its own.

* :class:`LossFunction`: batches are ``(x, y)``, ``(x1, x2, ..., y)`` or a dict with the target
  under ``y``/``target``/``targets``/``label``/``labels``; the loss is ``loss_fn(model(...), y)``.
* :class:`ModelLoss` (``[loss] target = "model"``): the whole batch goes to ``forward`` (a tuple
  as ``model(x, y)``, nanoGPT's convention; a dict as ``model(**batch)``, Hugging Face's) and the
  loss is taken from what it returns.

Each also names the problem its loss solves (:attr:`LossFunction.problem`), found at the first
batch from the loss and the model's output (:mod:`tuiloop.engine.problem`); a checkpoint keeps it.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from tuiloop.engine.exceptions import SetupError
from tuiloop.engine.metrics import logits_of, metric_inputs
from tuiloop.engine.problem import has_perplexity, infer_problem

TARGET_KEYS = ("y", "target", "targets", "label", "labels")
INTEGER_DTYPES = frozenset({torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8})  # token ids


def _count(batch: Any) -> int:
    """Samples in a batch: the leading size of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.ndim else 1
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (tuple, list)):
        for item in batch:
            n = _count(item)
            if n:
                return n
    return 0


def count_tokens(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Tokens in a batch of token sequences: the model's first input (a dict batch's ``input_ids``;
    for a model that computes its own loss, the batch's first item) when it is an integer tensor of
    shape (batch, seq), padding included; else 0. Read from the shape: no device sync."""
    first = kwargs.get("input_ids") if kwargs else None
    if first is None:
        first = args[0] if args else next(iter(kwargs.values()), None)
    if isinstance(first, torch.Tensor) and first.ndim == 2 and first.dtype in INTEGER_DTYPES:
        return first.shape[0] * first.shape[1]
    return 0


class LossFunction:
    """``loss_fn(output, target)`` on batches that carry their targets."""

    model_computes_loss = False

    def __init__(self, loss_fn: Callable[..., torch.Tensor]) -> None:
        self.loss_fn = loss_fn
        self.problem: str | None = None  # multiclass, binary, ...: unknown until the first batch

    def find_problem(self, output: Any) -> str:
        """The problem the loss solves, told by the first batch's output."""
        return infer_problem(self.loss_fn, output) if isinstance(output, torch.Tensor) else "other"

    def split(self, batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
        """(args, kwargs, target) for ``model(*args, **kwargs)``."""
        if isinstance(batch, dict):
            for key in TARGET_KEYS:
                if key in batch:
                    return (), {k: v for k, v in batch.items() if k != key}, batch[key]
            raise SetupError(
                'a dict batch needs its target under one of the keys y, target, targets, label or labels (or, for a model that computes its own loss, [loss] target = "model")'
            )
        if isinstance(batch, (tuple, list)) and len(batch) >= 2:
            return tuple(batch[:-1]), {}, batch[-1]
        what = (
            f"a {type(batch).__name__} of {len(batch)} item"
            if isinstance(batch, (tuple, list))
            else f"a {type(batch).__name__}"
        )
        raise SetupError(f"each batch must be (inputs, targets), (input1, ..., targets) or a dict; got {what}")

    def loss(self, output: Any, target: Any) -> torch.Tensor:
        return self.loss_fn(output, target)

    def count(self, batch: Any, target: Any) -> int:
        return len(target) if isinstance(target, torch.Tensor) and target.ndim else _count(batch)

    @property
    def perplexity(self) -> bool:
        """A cross-entropy: val_ppl = exp(val_loss) is reported."""
        return has_perplexity(self.loss_fn)

    def metric_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any, target: Any) -> tuple[Any, Any]:
        """(preds, targets) for the metrics of [metrics], as the problem type asks for them."""
        return metric_inputs(self.problem or "other", output, target)


class ModelLoss:
    """The model computes its own loss from the whole batch."""

    model_computes_loss = True
    loss_fn = None

    def __init__(self) -> None:
        self.problem: str | None = None  # "model" from the first batch on

    def find_problem(self, output: Any) -> str:
        return "model"

    def split(self, batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
        if isinstance(batch, dict):
            return (), dict(batch), None
        if isinstance(batch, (tuple, list)):
            return tuple(batch), {}, None
        return (batch,), {}, None

    def loss(self, output: Any, target: Any) -> torch.Tensor:
        return loss_from_output(output)

    def count(self, batch: Any, target: Any) -> int:
        return _count(batch)

    perplexity = True  # the model's own loss is a language model's cross-entropy, as a rule

    def metric_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any, target: Any) -> tuple[Any, Any]:
        """The model's logits (``output.logits``, or the tensor that is not the loss) and the batch's
        labels (a dict's labels/targets/..., a tuple's last item)."""
        logits = logits_of(output)
        if logits is None:
            raise SetupError(
                f"[metrics] need the model's predictions, but it returned {describe(output)}. "
                'Return them with the loss: (logits, loss), output.logits or output["logits"].'
            )
        labels = next((kwargs[k] for k in TARGET_KEYS if k in kwargs), None)
        if labels is None and len(args) >= 2:
            labels = args[-1]
        if labels is None:
            raise SetupError(
                "[metrics] need the batch's labels, and this batch has none: "
                "give a dict batch a labels (or targets, y, ...) key, or make a tuple batch (inputs, labels)."
            )
        return metric_inputs("model", logits, labels)


def loss_from_output(output: Any) -> torch.Tensor:
    """The loss in what a model returned: a scalar tensor, ``.loss``, ``["loss"]``, or the one scalar
    tensor of a tuple or list; anything else is a :class:`SetupError` naming what came back."""
    if isinstance(output, torch.Tensor) and output.ndim == 0:
        return output
    loss = getattr(output, "loss", None)
    if isinstance(loss, torch.Tensor) and loss.ndim == 0:
        return loss
    if isinstance(output, dict) and isinstance(output.get("loss"), torch.Tensor) and output["loss"].ndim == 0:
        return output["loss"]
    if isinstance(output, (tuple, list)):
        scalars = [item for item in output if isinstance(item, torch.Tensor) and item.ndim == 0]
        if len(scalars) == 1:
            return scalars[0]
    raise SetupError(
        f'[loss] target = "model" takes the loss from what the model returns, but it returned {describe(output)}. '
        'Return the loss as a scalar tensor, as output.loss, as output["loss"], or as the one scalar tensor in a tuple or list '
        "(e.g. (logits, loss)); a Hugging Face model computes it when the batch carries labels."
    )


def describe(value: Any) -> str:
    """What a model returned, in a few words: 'a tuple of (tensor (8, 65), None)'."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape ({', '.join(map(str, value.shape))})"
    if value is None:
        return "None"
    if isinstance(value, (tuple, list)):
        parts = ", ".join(
            "tensor (" + ", ".join(map(str, v.shape)) + ")" if isinstance(v, torch.Tensor) else type(v).__name__
            for v in value
        )
        return f"a {type(value).__name__} of ({parts})"
    if isinstance(value, dict):
        return f"a dict with keys {', '.join(map(str, value))} and no scalar 'loss'"
    keys = getattr(value, "keys", None)
    if callable(keys):
        return f"a {type(value).__name__} with {', '.join(map(str, keys()))} and no scalar loss"
    return f"a {type(value).__name__}"
