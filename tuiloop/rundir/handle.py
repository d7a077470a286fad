"""An open run directory: the one handle every writer of a run writes through.

A run directory may sit in a folder other users can write to (a group's scratch space). They
cannot read or change what is inside it (it is 0700), but such a folder lets them rename it and
put a symbolic link to a folder of theirs in its place. So a run opens its directory once,
checks that it is a real directory of its own, and creates, replaces and removes every file
relative to that handle (``dir_fd``, ``O_NOFOLLOW``): a link put in its place later is never
followed, and whatever the run writes stays in its own directory, wherever that was moved.

Every file is created owner-only (0600, folders 0700) whatever the umask, and a folder that
every user may write to without the sticky bit (which keeps them from renaming what is not
theirs) is refused as a place for runs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import secrets
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

FILE_MODE = 0o600
DIR_MODE = 0o700
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_PARENT_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC  # a folder we may only pass through


class RunDirError(Exception):
    """A run directory that cannot be written safely; one paragraph: what, where, and the fix."""

    def __init__(self, where: str, problem: str, fix: str) -> None:
        self.where, self.problem, self.fix = where, problem, fix
        super().__init__(f"{where}: {problem}. {fix}")


def owner_name(uid: int) -> str:
    """A user's name, or their uid where the system has no name for it."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def folder_risks(folder: Path, st: os.stat_result) -> str:
    """A warning about a folder that others may write to (they can rename or delete the runs in
    it, not read or redirect them); '' if only its owner can. Raises :class:`RunDirError` for one
    that every user may write to without the sticky bit."""
    mode = st.st_mode
    if mode & stat.S_ISVTX:
        return ""  # the sticky bit: only an entry's owner may rename or delete it (as in /tmp)
    if mode & stat.S_IWOTH:
        raise RunDirError(
            str(folder),
            f"every user may write to this folder (mode {stat.S_IMODE(mode):04o}) and it has no sticky bit, so any of "
            "them could move a run directory away and put a link to a folder of their own in its place",
            f"Make it yours alone (chmod o-w {folder}), add the sticky bit as /tmp has (chmod +t {folder}), "
            "or set [run] out_dir to a folder only you can write to",
        )
    if mode & stat.S_IWGRP:
        return (
            f"{folder} is writable by its group ({stat.S_IMODE(mode):04o}, no sticky bit): its members can rename or "
            f"remove this run's directory, though not read it or redirect what the run writes; chmod +t {folder} stops that"
        )
    if st.st_uid not in (os.geteuid(), 0):
        return f"{folder} belongs to {owner_name(st.st_uid)}, who can rename or remove this run's directory"
    return ""


class RunDir:
    """A run directory held open: files are created, read, replaced and removed relative to it,
    never through a symbolic link, owner-only. ``path`` is where it was opened (for messages and
    for the readers of other processes); ``warning`` says what others may do to it, if anything."""

    def __init__(self, path: Path, fd: int, warning: str = "") -> None:
        self.path = path
        self.fd = fd
        self.warning = warning

    # ---- opening -----------------------------------------------------------------------------
    @classmethod
    def create(cls, out_dir: Path, name: str) -> RunDir:
        """A fresh, uniquely named run directory ``<name>-<date>-<time>-<4 hex>`` in ``out_dir``
        (made if missing, writable by its owner only)."""
        _make_folder(out_dir)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        with _folder(out_dir) as (parent, warning):
            while True:
                leaf = f"{name}-{stamp}-{secrets.token_hex(2)}"
                try:
                    os.mkdir(leaf, DIR_MODE, dir_fd=parent)
                    break
                except FileExistsError:
                    continue
            return cls._open_in(parent, out_dir.resolve() / leaf, warning)

    @classmethod
    def open(cls, path: Path, create: bool = False) -> RunDir:
        """The run directory at ``path``, which must be a directory of this user's and not a
        symbolic link (``create``: made if missing). It is made owner-only (0700)."""
        path = Path(path)
        if create:
            _make_folder(path.parent)
        with _folder(path.parent) as (parent, warning):
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(path.name, DIR_MODE, dir_fd=parent)
            return cls._open_in(parent, path.parent.resolve() / path.name, warning)

    @classmethod
    def _open_in(cls, parent: int, path: Path, warning: str) -> RunDir:
        try:
            fd = os.open(path.name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
                raise RunDirError(
                    str(path),
                    f"it is a symbolic link (to {os.readlink(path)}), not the run directory itself: a run never writes through one",
                    "Pass the run directory's real path; if you did not make the link, someone who can write to its folder may have",
                ) from None
            raise
        home = cls(path, fd, warning)
        try:
            home._check_own()
        except BaseException:
            home.close()
            raise
        return home

    def _check_own(self) -> None:
        st = os.fstat(self.fd)
        if st.st_uid != os.geteuid():
            raise RunDirError(
                str(self.path),
                f"this directory belongs to {owner_name(st.st_uid)}, not to you: a run writes only into a directory of its own user",
                "Pass a run directory of yours, or start a new run",
            )
        if stat.S_IMODE(st.st_mode) != DIR_MODE:
            os.fchmod(self.fd, DIR_MODE)

    def subdir(self, name: str) -> RunDir:
        """The folder ``name`` in this one (made owner-only if missing), held open the same way."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, DIR_MODE, dir_fd=self.fd)
        return RunDir._open_in(self.fd, self.path / name, "")

    def same_file(self, name: str, fd: int) -> bool:
        """True if ``name`` here is the very file open as ``fd`` (not a link, nor another file)."""
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return False
        other = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (other.st_dev, other.st_ino)

    # ---- files ---------------------------------------------------------------------------------
    def open_fd(self, name: str, flags: int) -> int:
        """``os.open`` of ``name`` in this directory, never through a link; a file it creates is owner-only."""
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE, dir_fd=self.fd)
        if flags & os.O_CREAT:
            try:
                os.fchmod(fd, FILE_MODE)  # the umask may have taken bits away; a file from before may have more
            except OSError:
                os.close(fd)
                raise
        return fd

    def append(self, name: str) -> BinaryIO:
        """``name`` opened for appending (created owner-only if missing)."""
        return os.fdopen(self.open_fd(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab")

    def reader(self, name: str) -> BinaryIO:
        """``name`` opened for reading; a symbolic link raises OSError (ELOOP)."""
        return os.fdopen(self.open_fd(name, os.O_RDONLY), "rb")

    def read_bytes(self, name: str) -> bytes:
        """The bytes of ``name``; a symbolic link raises OSError (ELOOP)."""
        with self.reader(name) as f:
            return f.read()

    def write_atomic(self, name: str, data: bytes, durable: bool = True) -> None:
        """Replace ``name`` with ``data`` through a temp file and ``os.replace``: a reader sees the
        old file or the new one, never half of one. ``durable``: flushed to the disk first, and
        the rename itself after."""
        tmp = self.stage(name, data, durable)
        try:
            self.put(tmp, name)
        except BaseException:
            with contextlib.suppress(OSError):
                self.unlink(tmp)
            raise
        if durable:
            self.sync()

    def stage(self, name: str, data: bytes, durable: bool = True) -> str:
        """Write ``data`` into a temp file beside ``name`` and return the temp's name, for
        :meth:`put`. On a full disk or a read-only folder it raises the OSError (naming ``name``,
        not its temp) and leaves no temp behind."""
        tmp = f".{name}.{os.getpid()}.tmp"
        try:
            with os.fdopen(self.open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as f:
                f.write(data)
                f.flush()
                if durable:
                    os.fsync(f.fileno())
        except BaseException as e:
            with contextlib.suppress(OSError):  # on a read-only folder even this fails
                self.unlink(tmp)
            if isinstance(e, OSError):
                e.filename = str(self.path / name)
            raise
        return tmp

    def put(self, tmp: str, name: str) -> None:
        """Rename the staged ``tmp`` to ``name`` (it needs no more space)."""
        os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        """Remove ``name`` (a link itself, never what it points to); missing is fine."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    def names(self) -> list[str]:
        """The names in this directory."""
        return os.listdir(self.fd)

    def remove_stale_temps(self) -> list[str]:
        """Remove the temp files (``.NAME.PID.tmp``) that killed writers left here; call it only
        while holding the run's lock (then no other process writes here)."""
        mine = f".{os.getpid()}.tmp"
        stale = [n for n in self.names() if n.startswith(".") and n.endswith(".tmp") and not n.endswith(mine)]
        for name in stale:
            self.unlink(name)
        return stale

    def via(self) -> Path:
        """This directory as a path through the handle, for what takes only a path (binding a
        socket, a library's log folder, a reader of the run's files). On Linux
        ``/proc/self/fd/N``, which the kernel resolves to the directory held open, wherever it was
        moved; elsewhere the path itself."""
        if sys.platform.startswith("linux"):
            return Path(f"/proc/self/fd/{self.fd}")
        return self.path

    def entry(self, name: str) -> str:
        """A path to ``name`` through the handle (see :meth:`via`)."""
        return str(self.via() / name)

    def sync(self) -> None:
        """Make the renames and removals in this directory durable."""
        with contextlib.suppress(OSError):
            os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _make_folder(folder: Path) -> None:
    """Make the folder runs go in, if missing: writable by its owner only, whatever the umask."""
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, stat.S_IMODE(folder.stat().st_mode) & ~0o022)


@contextlib.contextmanager
def _folder(folder: Path) -> Iterator[tuple[int, str]]:
    """The folder a run directory is in, held open, and what others may do there."""
    fd = os.open(folder, _PARENT_FLAGS)
    try:
        yield fd, folder_risks(folder, os.fstat(fd))
    finally:
        os.close(fd)


def held(where: Path | RunDir) -> tuple[RunDir, Callable[[], None]]:
    """``where`` as a handle, and what to call when done with it (closing it if this opened it)."""
    if isinstance(where, RunDir):
        return where, lambda: None
    home = RunDir.open(where)
    return home, home.close
