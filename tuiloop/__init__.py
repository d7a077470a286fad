"""tuiloop: a terminal UI training monitor for PyTorch.

The names below load lazily, so ``import tuiloop`` (and the CLI's attach/show/ls) stays fast
and does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_spec": "tuiloop.spec",
    "SpecError": "tuiloop.spec",
    "run_spec": "tuiloop.runner.spec_run",
    "execute": "tuiloop.runner.spec_run",
    "build_trainer": "tuiloop.runner.build",
    "Trainer": "tuiloop.runner.api",
    "Options": "tuiloop.engine.trainer",
    "Batches": "tuiloop.engine.batches",
    "MetricMonitor": "tuiloop.engine.best",
    "track": "tuiloop.runner.track",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tuiloop' has no attribute {name!r}")
