"""Checkpoints: plain dicts that ``torch.load(path, weights_only=True)`` reads without tuiloop.

Keys follow PyTorch's own recipe (``model_state_dict``, ``optimizer_state_dict``, ``epoch``,
``loss``) plus what an exact resume needs. Writes go to a temp file in the same folder, are
flushed and fsynced, then ``os.replace``d over the old file: a kill at any instant leaves
either the old or the new checkpoint, both loadable.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch

from tuiloop.engine.exceptions import ResumeError

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
    "settings",
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


class Folder(Protocol):
    """Where checkpoint files go: a plain folder (:class:`PathFolder`), or the handle on a run
    directory's ``checkpoints/`` that a run writes through (:class:`tuiloop.rundir.handle.RunDir`)."""

    def write_atomic(self, name: str, data: bytes) -> None: ...

    def read_bytes(self, name: str) -> bytes: ...


class PathFolder:
    """A folder named by its path (the engine's Trainer given a ``run_dir`` outside a run's life)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write_atomic(self, name: str, data: bytes) -> None:
        save_atomic(data, self.path / name)

    def read_bytes(self, name: str) -> bytes:
        return (self.path / name).read_bytes()


def sha256(data: bytes) -> str:
    """The hex SHA-256 of a checkpoint's bytes, as the event log records it when it is written."""
    return hashlib.sha256(data).hexdigest()


def save_atomic(obj: dict[str, Any] | bytes, path: Path) -> None:
    """Write a checkpoint (or its :func:`serialize`d bytes) so a crash never leaves a torn or
    missing file; owner-only (0600), never written through a symbolic link."""
    data = obj if isinstance(obj, bytes) else serialize(obj)
    path.parent.mkdir(mode=0o700, exist_ok=True)  # never its parents: a deleted run directory stays deleted
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o600)  # whatever the umask
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


# The keys a checkpoint cannot resume without (the others have defaults for older checkpoints).
_KINDS = {
    "model_state_dict": dict,
    "optimizer_state_dict": dict,
    "epoch": int,
    "step": int,
    "best": dict,
    "rng_state": dict,
}
REQUIRED = ("model_state_dict", "optimizer_state_dict", "epoch", "batch_in_epoch", "step", "best", "rng_state")


def load(source: Path | bytes, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a tuiloop checkpoint the way a user would: weights only. ``source``: its file, or
    the file's bytes already read. Raises :class:`ResumeError` saying why a file that is not a
    checkpoint of this engine (empty, damaged, another kind of file) cannot be one."""
    try:
        state = torch.load(
            io.BytesIO(source) if isinstance(source, bytes) else source, map_location=map_location, weights_only=True
        )
    except FileNotFoundError:
        raise
    except Exception as e:  # torch.load raises whatever its unpickler meets: EOFError, UnpicklingError, RuntimeError...
        text = str(e).strip().splitlines()
        raise ResumeError(
            f"it cannot be read as a checkpoint ({type(e).__name__}: {text[0] if text else 'no detail'})"
        ) from None
    if not isinstance(state, dict):
        raise ResumeError(f"it holds a {type(state).__name__}, not the dict a checkpoint is")
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise ResumeError(f"it is not a checkpoint of this engine: it has no {', '.join(missing)}")
    wrong = [key for key, kind in _KINDS.items() if not isinstance(state[key], kind) or isinstance(state[key], bool)]
    if wrong:
        raise ResumeError(f"it is not a checkpoint of this engine: its {', '.join(wrong)} has the wrong type")
    return state


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
