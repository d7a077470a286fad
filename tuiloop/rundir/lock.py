"""A run is live exactly while its training process holds ``run.lock`` (``flock``, exclusive).

The kernel drops the lock when the holder dies, however it dies, so there is no stale state to
clean up and no pid that can be reused: ``ls``, ``attach``, ``show``, commands and ``--resume``
all ask the lock, with the same answer on Linux and macOS.

The process that creates a run directory takes the lock and hands the open file to the training
process it starts (``pass_fds``), so the run is live from its first instant.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from tuiloop.rundir.layout import LOCK


class RunIsLive(Exception):
    """Another process holds the run's lock."""


class RunLock:
    """The exclusive lock of one run directory, held until :meth:`release` or the process ends."""

    def __init__(self, run_dir: Path, fd: int) -> None:
        self.run_dir = run_dir
        self.fd = fd

    @classmethod
    def acquire(cls, run_dir: Path, wait: float = 2.0) -> RunLock:
        """Take the lock (creating run.lock); raises :class:`RunIsLive` if a live run holds it.

        Views test the lock by taking it for an instant, so a busy lock is retried for ``wait``
        seconds before it counts as held.
        """
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return cls(run_dir, fd)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise RunIsLive(str(run_dir)) from None
                time.sleep(0.05)

    @classmethod
    def adopt(cls, run_dir: Path, fd: int) -> RunLock:
        """The lock the parent process took and passed to us as an open file."""
        os.set_inheritable(fd, False)
        return cls(run_dir, fd)

    @classmethod
    def held_elsewhere(cls, run_dir: Path) -> RunLock:
        """The lock another process of this run holds (the launcher of a distributed run)."""
        return cls(run_dir, -1)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the last copy of the file releases the lock
            self.fd = -1


def is_locked(run_dir: Path) -> bool:
    """True while some process holds the run's lock (the run is live).

    Raises PermissionError for another user's run directory.
    """
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock we may have just taken
    return False
