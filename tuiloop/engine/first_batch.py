"""The first batch: the forward pass that shows what the run is, and the checks it allows.

Its output tells the problem (multi-class, regression, ...; :mod:`tuiloop.engine.problem`), so
the metrics the run will report, so whether every monitor the spec names can be fed. Mistakes
PyTorch would train on silently, or explain badly, stop the run here with a message that names
the fix (:class:`SetupError`); doubts are warnings.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from tuiloop.engine.events import Event, Message, Starting
from tuiloop.engine.exceptions import SetupError
from tuiloop.engine.metrics import MetricSet
from tuiloop.engine.objective import LossFunction, ModelLoss
from tuiloop.engine.options import Options
from tuiloop.engine.problem import check_batch, check_inputs, reported_metrics

PROBLEM_TEXT = {
    "multiclass": "multi-class classification",
    "binary": "binary classification",
    "multilabel": "multi-label classification",
    "regression": "regression",
    "model": "a model that computes its own loss",
    "other": "a problem tuiloop has no metric for",
}


class FirstBatch:
    """The first forward pass and what its output shows; the loop calls it until ``objective.problem`` is known."""

    def __init__(
        self,
        model: torch.nn.Module,
        objective: LossFunction | ModelLoss,
        opt: Options,
        validated: bool,
        emit: Callable[[Event], None],
        metrics: MetricSet | None = None,
    ) -> None:
        self.model = model
        self.objective = objective
        self.metrics = metrics  # the user's [metrics], tried on the first batch
        self.compiling = bool(opt.compile)
        self.validated = validated  # the run has a validation split
        self.emit = emit
        es = opt.early_stopping
        # [checkpoint] monitor defaults to the early-stopping one: name the key the user wrote first
        self.monitors = (
            ("[early_stopping] monitor", es.monitor if es else None),
            ("[scheduler] monitor", opt.scheduler_monitor),
            ("[checkpoint] monitor", opt.monitor),
        )

    def forward(self, args: tuple[Any, ...], kwargs: dict[str, Any], target: Any) -> Any:
        """The model's output on the first batch, checked before its loss (the loss's own error would be less clear)."""
        output = self._forward(args, kwargs)
        self._learn_problem(output, target)
        if self.metrics and self.validated:
            self.metrics.probe(*self.objective.metric_inputs(args, kwargs, output, target))
        return output

    def _forward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The first forward pass, with what PyTorch's own error leaves out (a dtype mismatch)."""
        if self.compiling:
            self.emit(Starting("compiling the model with torch.compile: the first step takes a while"))
            self.emit(Message("info", "torch.compile: compiling the model; the first step takes a while"))
        try:
            return self.model(*args, **kwargs)
        except RuntimeError as e:
            problem = check_inputs(self.model, args, kwargs)
            if problem:
                raise SetupError(problem) from e
            raise
        except TypeError as e:
            if self.objective.model_computes_loss and "positional argument" in str(e) and "given" in str(e):
                parts = ", ".join(["x", "y"] if len(args) == 2 else [f"arg{i + 1}" for i in range(len(args))])
                raise SetupError(
                    f'with [loss] target = "model" the whole batch goes to forward, as model({parts or "**batch"}), '
                    f"and this model does not take it ({e}). A model that returns only its outputs needs a loss: "
                    'set [loss] target = "CrossEntropyLoss" (or the loss that fits the problem).'
                ) from e
            raise

    def _learn_problem(self, output: Any, target: Any) -> None:
        """Set ``objective.problem`` from the first output, check the batch and the monitors
        against it, and say what the run trains and reports."""
        objective = self.objective
        problem = objective.problem = objective.find_problem(output)
        if not objective.model_computes_loss:
            for text in check_batch(objective.loss_fn, output, target, problem):
                self.emit(Message("warning", text))
        user = self.metrics.names if self.metrics else []
        available = reported_metrics(problem, self.validated, objective.perplexity, user)
        for name, monitor in self.monitors:
            if monitor is not None and monitor not in available:
                if not self.validated:
                    raise SetupError(
                        f"{name} = {monitor!r} needs a validation split, and the data has none. Monitor train_loss, or return (train, val) from the data function."
                    )
                raise SetupError(
                    f"{name} = {monitor!r} is not reported for this {problem} problem. Use one of: {', '.join(available)}."
                )
        what = PROBLEM_TEXT.get(problem, problem)
        source = "the model's own loss" if objective.model_computes_loss else type(objective.loss_fn).__name__
        self.emit(Message("info", f"{what} ({source}); metrics: {', '.join(available)}"))
