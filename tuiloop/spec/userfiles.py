"""Files a spec names (``"models.py:MLP"``), imported under module names any process can import again.

A file is imported as ``tuiloop.spec.userfiles.f<hex of its absolute path>``. A DataLoader worker
started with ``spawn`` or ``forkserver`` unpickles the user's dataset by that module name: importing
it there finds this module, whose finder loads the same file again. The file's folder goes on
``sys.path`` so it can import its neighbours.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

PREFIX = __name__ + ".f"
__path__: list[str] = []  # a package, so the per-file modules can live under it


def module_name(file: Path) -> str:
    """The module name ``file`` (absolute) is imported as."""
    return PREFIX + os.fsencode(str(file)).hex()


def import_file(file: Path) -> ModuleType:
    """Import ``file`` (once per process); its own exceptions propagate."""
    return importlib.import_module(module_name(file))


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> ModuleSpec | None:
        if not fullname.startswith(PREFIX):
            return None
        try:
            file = Path(os.fsdecode(bytes.fromhex(fullname[len(PREFIX) :])))
        except ValueError:
            return None
        if not file.is_file():
            return None
        folder = str(file.parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        return importlib.util.spec_from_file_location(fullname, file)


if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.append(_Finder())
