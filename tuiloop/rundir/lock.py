"""A run is live exactly while its training process holds ``run.lock`` (``flock``, exclusive).

The kernel drops the lock when the holder dies, however it dies, so there is no stale state to
clean up and no pid that can be reused: ``ls``, ``attach``, ``show``, commands and ``--resume``
all ask the lock, with the same answer on Linux and macOS.

The process that creates a run directory takes the lock and hands the open file to the training
process it starts (``pass_fds``), so the run is live from its first instant.

A ``flock`` belongs to the open file, and a forked child shares its parent's open files: a
DataLoader worker forked by the training process would hold the run's lock for as long as it
lives, after its parent was forced out or killed (until its own watchdog notices, 5 s; forever
if it hangs in the user's ``__getitem__``). So a forked child closes its copies of the locks this
process holds at once (:func:`os.register_at_fork`); ``exec`` closes them anyway (``O_CLOEXEC``),
except for the one copy handed on on purpose. POSIX record locks (``lockf``) are not inherited
by ``fork``, but they cannot be handed to the training process either, and closing *any*
descriptor of the file drops them: a view that tests the lock from the holding process would
release it.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from tuiloop.rundir.handle import RunDir, RunDirError
from tuiloop.rundir.layout import LOCK

_held: set[int] = set()  # descriptors of the locks this process holds


def _forget_in_child() -> None:
    """In a forked child: close our copies of the parent's locks (the parent keeps them)."""
    for fd in _held:
        try:
            os.close(fd)  # a flock ends with its last descriptor, not with this one
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_forget_in_child)


class RunIsLive(Exception):
    """Another process holds the run's lock."""


class RunLock:
    """The exclusive lock of one run directory, held until :meth:`release` or the process ends,
    with the handle on the directory (:class:`~tuiloop.rundir.handle.RunDir`) the run writes
    through; releasing the lock closes that too."""

    def __init__(self, home: RunDir, fd: int) -> None:
        self.home = home
        self.run_dir = home.path
        self.fd = fd
        if fd >= 0:
            _held.add(fd)

    @classmethod
    def acquire(cls, where: Path | RunDir, wait: float = 2.0) -> RunLock:
        """Take the lock (creating run.lock); raises :class:`RunIsLive` if a live run holds it.

        ``where``: the run directory, or a handle on it that the lock then owns (a handle the
        caller passed stays the caller's if the lock is not taken). Views test the lock by
        taking it for an instant, so a busy lock is retried for ``wait`` seconds before it
        counts as held.
        """
        home = where if isinstance(where, RunDir) else RunDir.open(where)
        try:
            fd = home.open_fd(LOCK, os.O_RDWR | os.O_CREAT)
        except BaseException:
            if home is not where:
                home.close()
            raise
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return cls(home, fd)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    if home is not where:
                        home.close()
                    raise RunIsLive(str(home.path)) from None
                time.sleep(0.05)

    @classmethod
    def adopt(cls, run_dir: Path, fd: int) -> RunLock:
        """The lock the parent process took and passed to us as an open file. The directory is
        opened again here, and must be the one that lock belongs to: one put in its place
        meanwhile (a link, another directory) is refused."""
        os.set_inheritable(fd, False)
        home = RunDir.open(run_dir)
        if not home.same_file(LOCK, fd):
            home.close()
            raise RunDirError(
                str(run_dir),
                "this is no longer the run directory that was created for the run: it was moved or replaced before the run could start",
                "Start the run again, in a folder only you can write to",
            )
        return cls(home, fd)

    @classmethod
    def held_elsewhere(cls, run_dir: Path) -> RunLock:
        """The lock another process of this run holds (the launcher of a distributed run)."""
        return cls(RunDir.open(run_dir), -1)

    def release(self) -> None:
        if self.fd >= 0:
            _held.discard(self.fd)
            os.close(self.fd)  # closing the last copy of the file releases the lock
            self.fd = -1
        self.home.close()


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
