"""One optimizer step: backward through each micro-batch of a group, then clip, step and clear.

Accumulation is the larger batch, exactly where the maths allows: each micro-batch's loss (a
mean over its samples) is weighted by its share of the group, so a group of 4 batches of 8 gives
the gradient of one batch of 32, and a last, smaller group of an epoch is stepped with the
gradient of its own mean, not dropped. The total gradient norm is kept on the device with the
losses; nothing here reads a value back to the host.
"""

from __future__ import annotations

from typing import Any

import torch

from tuiloop.engine.precision import Precision

try:
    from torch.nn.utils import get_total_norm as _total_norm
except ImportError:  # torch < 2.6
    _total_norm = None  # type: ignore[assignment]  # the fallback below measures the norm by clipping at inf


class Stepper:
    """Backward, accumulation, unscaling, clipping and the optimizer step of the training loop."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        precision: Precision,
        accumulate: int = 1,
        clip_val: float = 0.0,
        clip_algorithm: str = "norm",
        log_grad_norm: bool | None = None,
    ) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = optimizer
        self.scaler = precision.scaler
        self.accumulate = accumulate
        self.clip_val = clip_val
        self.clip_algorithm = clip_algorithm
        # Measured whenever gradients are clipped (the norm before clipping is what one tunes the
        # limit by) and at 16-mixed (a non-finite norm is a step the scaler skips); else on request.
        needed = clip_val > 0 or self.scaler is not None
        self.log_grad_norm = needed or bool(log_grad_norm)
        self.nominal = 0  # samples in a full group: accumulate x the first micro-batch's size
        self.micro = 0  # micro-batches in the open group
        self.samples = 0
        self.loss_sum: Any = 0.0  # sum of loss x samples over the open group (a float on the CPU path)

    def backward(self, loss: torch.Tensor, value: Any, n: int) -> None:
        """Backward of one micro-batch of ``n`` samples; ``value`` is its detached loss (a float or a tensor)."""
        if self.accumulate > 1:
            if not self.nominal:
                self.nominal = self.accumulate * n
            loss = loss * (n / self.nominal)
            self.loss_sum = value * n if self.micro == 0 else self.loss_sum + value * n
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        self.micro += 1
        self.samples += n

    def step(self) -> tuple[Any, torch.Tensor | None]:
        """Step the optimizer on the open group; returns (the group's mean loss or None at
        ``accumulate = 1``, the total gradient norm before clipping or None)."""
        if self.accumulate > 1 and self.samples != self.nominal:  # a short last group: its own mean
            torch._foreach_mul_([p.grad for p in self.params if p.grad is not None], self.nominal / self.samples)
        scaler, optimizer = self.scaler, self.optimizer
        norm = None
        if self.clip_val > 0 or self.log_grad_norm:
            if scaler is not None:
                scaler.unscale_(optimizer)
            norm = self._clip_and_measure()
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        group_loss = self.loss_sum / self.samples if self.accumulate > 1 else None
        self.micro = self.samples = 0
        self.loss_sum = 0.0
        return group_loss, norm

    def _clip_and_measure(self) -> torch.Tensor | None:
        if self.clip_val > 0 and self.clip_algorithm == "norm":
            return torch.nn.utils.clip_grad_norm_(self.params, self.clip_val, foreach=True)
        norm = self.total_norm() if self.log_grad_norm else None
        if self.clip_val > 0:
            torch.nn.utils.clip_grad_value_(self.params, self.clip_val, foreach=True)
        return norm

    def total_norm(self) -> torch.Tensor:
        grads = [p.grad for p in self.params if p.grad is not None]
        if _total_norm is not None:
            return _total_norm(grads, foreach=True)
        return torch.nn.utils.clip_grad_norm_(self.params, float("inf"), foreach=True)  # pragma: no cover

    def state_dict(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
