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
    _kill(family)


def end_children() -> None:
    """SIGKILL every descendant of this process (DataLoader workers, whatever the user's code
    started): a process about to end at once leaves nothing behind, not even a worker stuck in
    ``__getitem__`` that would never notice its parent is gone."""
    try:
        family = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    _kill(family)


def _kill(family: list) -> None:
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
