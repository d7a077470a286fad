"""The engine's own errors: each message says what went wrong and how to fix it."""

from __future__ import annotations


class SetupError(ValueError):
    """Model, data, loss and settings do not fit together (found at the start or the first batch)."""


class ResumeError(ValueError):
    """A checkpoint cannot continue this run: another model, another monitor, missing state."""


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""
