"""``torch.compile`` for the training model: checked at the start, its compilations counted.

The first compiled step takes seconds to minutes; the run announces it so the wait is not
mistaken for a hang. Every later compilation (a new input shape, a changed Python value the
graph depends on) costs the same again, so each is counted and warned about.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, cast

import torch

MODES = ("default", "reduce-overhead", "max-autotune")


class CompileError(RuntimeError):
    """torch.compile cannot work on this machine; the message says why and what to do."""


def check_compiler(device: torch.device) -> None:
    """Inductor turns graphs into C++ (CPU) or Triton code whose launcher is C: it needs a compiler."""
    names = (
        [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
        if device.type == "cpu"
        else [os.environ.get("CC", ""), "gcc", "cc", "clang"]
    )
    if not any(name and shutil.which(name) for name in names):
        looked = ", ".join(n for n in names if n)
        raise CompileError(
            f"compile = true needs a C{'++' if device.type == 'cpu' else ''} compiler for torch.compile on {device.type}, and none was found "
            f"(looked for {looked} and ${'CXX' if device.type == 'cpu' else 'CC'}). Install one (for example: apt install g++), or set compile = false."
        )


def compile_model(model: torch.nn.Module, mode: bool | str, device: torch.device) -> torch.nn.Module:
    """``torch.compile(model)`` with ``mode`` (True: the default mode)."""
    check_compiler(device)
    compiled = torch.compile(model, mode=None if mode is True or mode == "default" else str(mode))
    return cast(torch.nn.Module, compiled)  # torch.compile of a Module returns an OptimizedModule, a Module


def compilations() -> int:
    """Frames torch.compile has compiled in this process so far (the first compile, plus recompiles and graph breaks)."""
    try:
        from torch._dynamo.utils import counters  # lazy: torch._dynamo takes ~1 s; only compiled runs ask
    except ImportError:  # pragma: no cover
        return 0
    frames: Any = counters.get("frames", {})
    return int(frames.get("ok", 0))
