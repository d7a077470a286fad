"""Where in the user's code an exception came from.

A frame counts as the user's when its file is outside the installed torch and tuiloop packages
(judged by where they were imported from, not by folder names: a project in a folder called
``torch`` is still the user's), and preferably outside the standard library and installed
packages too.
"""

from __future__ import annotations

import functools
import os
import site
import sys
import sysconfig
import traceback
from pathlib import Path

import tuiloop


def _roots() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the libraries tuiloop drives: torch and tuiloop; other installed code: stdlib, site-packages)."""
    ours = tuple(
        os.path.realpath(Path(m.__file__).parent) + os.sep
        for m in (sys.modules.get("torch"), tuiloop)
        if m is not None and m.__file__
    )
    return ours, _installed()


@functools.lru_cache(maxsize=1)
def _installed() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    others = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    others.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    others.add(site.getusersitepackages() if hasattr(site, "getusersitepackages") else None)
    return tuple(os.path.realpath(p) + os.sep for p in others if p)


def _outside(filename: str, roots: tuple[str, ...]) -> bool:
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return False
    path = os.path.realpath(filename)
    return not any(path.startswith(r) for r in roots)


def user_frames(e: BaseException) -> list[traceback.FrameSummary]:
    """The traceback's frames in the user's code, outermost first."""
    frames = traceback.extract_tb(e.__traceback__)
    ours, others = _roots()
    users = [f for f in frames if _outside(f.filename, ours + others)]
    return users or [f for f in frames if _outside(f.filename, ours)]


def format_frames(frames: list[traceback.FrameSummary]) -> list[str]:
    """Lines as a traceback prints them: the location, then the code."""
    out = []
    for f in frames:
        out.append(f'File "{f.filename}", line {f.lineno}, in {f.name}')
        if f.line:
            out.append(f"  {f.line.strip()}")
    return out


def describe_where(e: BaseException, phase: str, epoch: int, step: int) -> str:
    """'training, epoch 3, step 120: models.py:42 in forward' (the innermost user frame)."""
    frames = user_frames(e)
    loc = f": {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    return f"{phase}, epoch {epoch}, step {step}{loc}"
