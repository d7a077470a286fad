"""Numeric precision of the training step, named as Lightning users know it.

* ``32-true``: float32 throughout.
* ``bf16-mixed``: forward and loss under ``torch.autocast(dtype=torch.bfloat16)``; no loss scaling.
* ``16-mixed``: forward and loss under ``torch.autocast(dtype=torch.float16)`` with
  ``torch.amp.GradScaler``, whose skipped steps (inf/NaN gradients) are expected, not failures.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


class PrecisionError(ValueError):
    """This device cannot train at the precision asked for; the message says what to use."""


class Precision:
    """The autocast context and the grad scaler of one precision on one device."""

    def __init__(self, name: str, device: torch.device) -> None:
        if name not in PRECISIONS:
            raise PrecisionError(f"precision {name!r} is not one of {', '.join(PRECISIONS)}")
        self.name = name
        self.device = device
        self.dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(name)
        check(name, device)
        self.scaler: Any = torch.amp.GradScaler(device.type) if name == "16-mixed" else None

    @property
    def mixed(self) -> bool:
        return self.dtype is not None

    def autocast(self) -> contextlib.AbstractContextManager:
        """A context for the forward pass and the loss (reusable; a no-op at 32-true)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def check(name: str, device: torch.device) -> None:
    """Raise :class:`PrecisionError` if ``device`` cannot train at ``name``, saying what can."""
    kind = device.type
    if name == "16-mixed":
        if kind == "cpu":
            raise PrecisionError(
                'precision = "16-mixed" (float16 with loss scaling) needs a GPU; on the CPU use "bf16-mixed" (about as fast, no loss scaling needed) or "32-true"'
            )
        if kind == "mps":
            try:
                torch.amp.GradScaler("mps")
            except Exception as e:
                raise PrecisionError(
                    f'precision = "16-mixed" needs a GradScaler for MPS, which this torch ({torch.__version__}) lacks ({e}); use "bf16-mixed" or "32-true"'
                ) from None
    if name == "bf16-mixed" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        gpu = torch.cuda.get_device_name(device.index or 0)
        raise PrecisionError(
            f'precision = "bf16-mixed" needs a GPU with bfloat16 (Ampere or newer); {gpu} has none: use "16-mixed" (float16 with loss scaling) or "32-true"'
        )
    if name != "32-true" and hasattr(torch.amp, "is_autocast_available") and not torch.amp.is_autocast_available(kind):
        raise PrecisionError(
            f'precision = "{name}" needs torch.autocast on {kind}, which this torch ({torch.__version__}) does not offer; use "32-true"'
        )
