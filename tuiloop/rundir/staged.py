"""Several files of a run directory changed together, or not at all.

A resume rewrites ``spec.toml`` and ``run.json``. On a full disk or a read-only folder the first
write fails; written in place one by one, the files before it would already have changed. So
each new file is staged first (a temp file beside it, flushed and fsynced, through the run
directory's handle) and only when all of them are written are they put in place; a failure
removes the temps and changes nothing.
"""

from __future__ import annotations

import contextlib

from tuiloop.rundir.handle import RunDir


class StagedFiles:
    """New contents for files of one run directory: :meth:`write` each, then :meth:`commit` or :meth:`discard`."""

    def __init__(self, home: RunDir) -> None:
        self.home = home
        self._staged: list[tuple[str, str]] = []  # (temp, its place)

    def write(self, name: str, data: bytes) -> None:
        """Stage ``data`` for ``name``; raises OSError (naming it) after discarding everything staged."""
        try:
            self._staged.append((self.home.stage(name, data), name))
        except BaseException:
            self.discard()
            raise

    def commit(self) -> None:
        """Put every staged file in place (renames: they need no more space)."""
        for tmp, name in self._staged:
            self.home.put(tmp, name)
        self._staged = []
        self.home.sync()

    def discard(self) -> None:
        """Remove the temps; the run directory is as it was."""
        for tmp, _ in self._staged:
            with contextlib.suppress(OSError):
                self.home.unlink(tmp)
        self._staged = []
