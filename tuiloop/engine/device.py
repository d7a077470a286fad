"""Choosing the device and moving batches onto it."""

from __future__ import annotations

from typing import Any

import torch


class DeviceError(ValueError):
    """The spec asks for a device this machine does not have."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else must exist here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"{name!r} is not a device name; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f'device = {name!r} but this machine has no CUDA GPU visible to PyTorch (torch {torch.__version__}); use device = "auto" or "cpu"'
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device = {name!r} but only {torch.cuda.device_count()} CUDA device(s) are visible; use cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
            )
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(f'device = {name!r} but MPS is not available here; use device = "auto" or "cpu"')
    return device


def device_name(device: torch.device) -> str:
    """A human name: 'cpu', 'cuda:0 (NVIDIA H100)', 'mps'."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move tensors inside tensors, tuples (named too), lists and dicts to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, tuple):
        moved = [to_device(v, device, non_blocking) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else tuple(moved)
    if isinstance(batch, list):
        return [to_device(v, device, non_blocking) for v in batch]
    return batch
