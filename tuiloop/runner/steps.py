"""Per-step values from a loop that is not tuiloop's own, written a few times a second.

``tuiloop.track`` (and the framework callbacks) hand each optimizer step's loss to a
:class:`StepWriter`, which only appends it to a list; :meth:`StepWriter.flush` writes the
buffered steps as one ``TrainSteps`` event per run of consecutive steps, reading tensors in one
transfer (one device sync).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from tuiloop.engine.events import Event, TrainSteps

_clock = time.perf_counter


class StepWriter:
    """Buffers step losses (floats, or tensors left on their device) and writes them as events.

    ``emit`` takes the events; ``warn(key, text)`` says something once per key; ``interval``:
    seconds between writes (the first step is written at once).
    """

    def __init__(self, emit: Callable[[Event], None], warn: Callable[[str, str], None], interval: float) -> None:
        self.emit = emit
        self.warn = warn
        self.interval = interval
        self.epoch_loss = [0.0, 0]  # sum and count of the losses written this epoch
        self._since = [0.0, 0]  # sum and count of the losses written since the last mean_since()
        # the open run of consecutive steps, and closed ones waiting for the next write
        self._losses: list[Any] = []
        self._norms: list[float] = []  # their grad norms (NaN where a step gave none), when any step gave one
        self._first = 0  # the step of _losses[0]
        self._next_step: int | None = None  # the step that continues the open run
        # (first step, losses, grad norms, step in epoch, lr)
        self._segments: list[tuple[int, list[Any], list[float], int, float]] = []
        self._lr = math.nan  # unknown until a step gives one
        self._samples = 0
        self._last_write = _clock()
        self._due = 0.0
        self._epoch_start = 0  # the last step of the epochs before this one

    @property
    def step(self) -> int:
        """The last step given (0 before the first)."""
        return self._next_step - 1 if self._next_step is not None else 0

    def add(self, step: int, loss: Any, lr: float | None, samples: int, grad_norm: float | None = None) -> bool:
        """One step's loss (and the total grad norm before clipping, where the loop knows it); True
        when a write is due."""
        if step != self._next_step:
            self._jump(step)
        self._next_step = step + 1
        self._losses.append(loss if type(loss) is float else _scalar(loss))
        if grad_norm is not None or self._norms:
            self._norms += [math.nan] * (len(self._losses) - 1 - len(self._norms))
            self._norms.append(math.nan if grad_norm is None else float(grad_norm))
        if lr is not None:
            self._lr = lr
        if samples:
            self._samples += samples
        return _clock() >= self._due

    def new_epoch(self, at_step: int | None = None) -> None:
        """An epoch ended at ``at_step`` (default: the last step given; a loop that logs every N
        steps knows better): steps in the epoch count from there."""
        self._epoch_start = self.step if at_step is None else at_step
        self.epoch_loss = [0.0, 0]

    def mean_since(self) -> float | None:
        """The mean of the losses written since the last call (flush first), None if none were."""
        (total, count), self._since = self._since, [0.0, 0]
        return total / count if count else None

    def restart_rate(self) -> None:
        """Samples/s counts running time only: start counting again (after a pause)."""
        self._last_write, self._samples = _clock(), 0

    def flush(self, epoch: int) -> None:
        """Write the buffered steps of epoch ``epoch``: one TrainSteps event per run of consecutive steps."""
        now = _clock()
        self._due = now + self.interval
        if self._losses:
            self._cut()
        if not self._segments:
            return
        segments, self._segments = self._segments, []
        rate = self._samples / max(now - self._last_write, 1e-9)
        self._samples, self._last_write = 0, now
        for first, raw, norms, in_epoch, lr in segments:
            losses = _floats(raw)
            self.epoch_loss[0] += sum(losses)
            self.epoch_loss[1] += len(losses)
            self._since[0] += sum(losses)
            self._since[1] += len(losses)
            self.emit(TrainSteps(epoch, first, losses, in_epoch, lr, rate, norms or None))
            if not all(map(math.isfinite, losses)):
                bad = next(i for i, v in enumerate(losses) if not math.isfinite(v))
                self.warn("loss", f"the training loss is {losses[bad]} at step {first + bad}")

    def _jump(self, step: int) -> None:
        """``step`` does not continue the open run of steps: close it, start another."""
        if self._losses:
            self._cut()
        if self._next_step is not None and step < self._next_step:
            self.warn(
                "steps",
                f"step {step} logged after step {self._next_step - 1}: log the global step, which keeps growing across epochs, so the plot reads right",
            )
        self._first = step

    def _cut(self) -> None:
        """Close the open run of consecutive steps (written with the next flush)."""
        last = self._first + len(self._losses) - 1
        norms = self._norms + [math.nan] * (len(self._losses) - len(self._norms)) if self._norms else []
        self._segments.append((self._first, self._losses, norms, last - self._epoch_start, self._lr))
        self._losses, self._norms = [], []
        self._first = last + 1


def _scalar(value: Any) -> Any:
    """A loss as kept: a tensor stays on its device (detached), anything else becomes a float."""
    if hasattr(value, "detach"):
        if value.numel() != 1:
            raise ValueError(f"train_loss must be a single number, not a tensor of shape {tuple(value.shape)}")
        return value.detach()
    return float(value)


def _floats(values: list[Any]) -> list[float]:
    """The buffered losses as floats; tensors are read in one transfer (one device sync)."""
    if all(type(v) is float for v in values):
        return values
    tensors = [v for v in values if type(v) is not float]
    try:
        import torch  # lazy: keeps torch out of `import tuiloop.runner.track`; a loop that gave tensors has it

        read = iter(torch.stack(tensors).float().reshape(-1).tolist())
    except RuntimeError:  # tensors of several shapes (() and (1,)) or on several devices
        read = iter([float(t) for t in tensors])
    return [v if type(v) is float else next(read) for v in values]
