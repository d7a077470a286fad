"""Checkpoints: plain dicts that ``torch.load(path, weights_only=True)`` reads without tuiloop.

Keys follow PyTorch's own recipe (``model_state_dict``, ``optimizer_state_dict``, ``epoch``,
``loss``) plus what an exact resume needs. Writes go to a temp file in the same folder, are
flushed and fsynced, then ``os.replace``d over the old file: a kill at any instant leaves
either the old or the new checkpoint, both loadable.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

# Every key of a checkpoint, in the order it is written: PyTorch's recipe, then what a resume needs.
KEYS = (
    "model_state_dict",
    "optimizer_state_dict",
    "scheduler_state_dict",
    "scaler_state_dict",
    "epoch",
    "batch_in_epoch",
    "step",
    "loss",
    "metrics",
    "epoch_loss_sum",
    "epoch_loss_count",
    "best",
    "early_stopping",
    "problem",
    "rng_state",
    "rng_states",
    "world_size",
    "epoch_rng_state",
    "lr_scale",
    "tuiloop_version",
)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The user's module inside DDP/DataParallel (``module.``) and torch.compile (``_orig_mod.``)."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None and type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
            inner = getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def serialize(obj: dict[str, Any]) -> bytes:
    """The bytes ``torch.save`` writes (into memory: faster than its many small file writes)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_atomic(obj: dict[str, Any] | bytes, path: Path) -> None:
    """Write a checkpoint (or its :func:`serialize`d bytes) so a crash never leaves a torn or missing file."""
    data = obj if isinstance(obj, bytes) else serialize(obj)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # on a read-only folder even this fails
            tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temp files (``.NAME.PID.tmp``) that killed writers left behind.

    Call it only while holding the run's lock: then no other process writes there.
    """
    removed = []
    for tmp in folder.glob(".*.tmp"):
        if not tmp.name.endswith(f".{os.getpid()}.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a tuiloop checkpoint the way a user would: weights only."""
    return torch.load(path, map_location=map_location, weights_only=True)


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from, in weights_only-loadable form."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _py_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    name, keys, pos, has_gauss, cached = cast(tuple[str, Any, int, int, float], np.random.get_state(legacy=True))
    state["numpy"] = {
        "name": name,
        "keys": torch.from_numpy(keys.astype("int64")),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }
    return state


def _py_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state((s["name"], s["keys"].numpy().astype("uint32"), s["pos"], s["has_gauss"], s["cached"]))
