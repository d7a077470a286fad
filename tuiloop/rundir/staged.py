"""Several files of a run directory changed together, or not at all.

A resume rewrites ``spec.toml`` and ``run.json``. On a full disk or a read-only folder the first
write fails; written in place one by one, the files before it would already have changed. So
each new file is staged first (a temp file beside it, flushed and fsynced) and only when all of
them are written are they put in place; a failure removes the temps and changes nothing.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tuiloop.rundir.layout import stage


class StagedFiles:
    """New contents for files of one folder: :meth:`write` each, then :meth:`commit` or :meth:`discard`."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []  # (temp, its place)

    def write(self, path: Path, data: bytes) -> None:
        """Stage ``data`` for ``path``; raises OSError (naming ``path``) after discarding everything staged."""
        try:
            self._staged.append((stage(path, data), path))
        except BaseException:
            self.discard()
            raise

    def commit(self) -> None:
        """Put every staged file in place (renames: they need no more space)."""
        for tmp, path in self._staged:
            os.replace(tmp, path)
        self._staged = []

    def discard(self) -> None:
        """Remove the temps; the folder is as it was."""
        for tmp, _ in self._staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._staged = []
