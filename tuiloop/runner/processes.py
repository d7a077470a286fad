"""Ending a training process and everything it started (torchrun's ranks live in sessions of their own)."""

from __future__ import annotations

import psutil


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and all its descendants; a process already gone is skipped."""
    try:
        root = psutil.Process(pid)
        family = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
