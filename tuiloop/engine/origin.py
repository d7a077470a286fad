"""Where in the user's code an exception came from.

A frame counts as the user's when its file is outside the installed torch and tuiloop packages
(judged by where they were imported from, not by folder names: a project in a folder called
``torch`` is still the user's), and preferably outside the standard library and installed
packages too.
"""

from __future__ import annotations

import functools
import linecache
import os
import re
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


def stuck_frames(stack: list[traceback.FrameSummary]) -> list[traceback.FrameSummary]:
    """Of a thread's stack (outermost first), the frames that say where it waits: the user's, else
    those outside tuiloop and torch (a library's), else the innermost one."""
    ours, others = _roots()
    return (
        [f for f in stack if _outside(f.filename, ours + others)]
        or [f for f in stack if _outside(f.filename, ours)]
        or stack[-1:]
    )


def format_frames(frames: list[traceback.FrameSummary]) -> list[str]:
    """Lines as a traceback prints them: the location, then the code."""
    out = []
    for f in frames:
        out.append(f'File "{f.filename}", line {f.lineno}, in {f.name}')
        if f.line:
            out.append(f"  {f.line.strip()}")
    return out


def error_text(e: BaseException) -> str:
    """'TypeError: ...'; a ``sys.exit(3)`` in the user's code says so (its str() is just '3')."""
    if isinstance(e, SystemExit):
        return f"SystemExit: the code called sys.exit({e.code!r})"
    return f"{type(e).__name__}: {e}"


def describe_where(e: BaseException, phase: str, epoch: int, step: int) -> str:
    """'training, epoch 3, step 120: models.py:42 in forward' (the innermost user frame)."""
    frames = user_frames(e)
    loc = f": {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    return f"{phase}, epoch {epoch}, step {step}{loc}"


FATAL = "Fatal Python error: "  # how faulthandler starts a dump (SIGSEGV, SIGFPE, SIGABRT, SIGBUS, SIGILL)
_FAULT_FRAME = re.compile(r'^\s+File "(.*)", line (\d+) in (.*)$')


def fault_dump(output: str) -> str:
    """The last fatal-error dump that :mod:`faulthandler` wrote into ``output``, or ''."""
    at = output.rfind(FATAL)
    if at < 0:
        return ""
    lines = output[at:].splitlines()
    end = next((i for i, line in enumerate(lines) if line.startswith("Extension modules:")), len(lines))
    return "\n".join(lines[:end]).rstrip() + "\n"


def fault_frames(dump: str) -> list[traceback.FrameSummary]:
    """The frames of the crashing thread in a :func:`fault_dump` that are the user's, outermost first."""
    frames: list[traceback.FrameSummary] = []
    current = False
    for line in dump.splitlines():
        if line.startswith("Current thread"):
            current = True
        elif current and (m := _FAULT_FRAME.match(line)):
            frames.append(
                traceback.FrameSummary(
                    m.group(1), int(m.group(2)), m.group(3), line=_source(m.group(1), int(m.group(2)))
                )
            )
        elif current and frames:
            break
    frames.reverse()  # faulthandler prints the most recent call first
    ours, others = _roots()
    users = [f for f in frames if _outside(f.filename, ours + others)]
    return users or [f for f in frames if _outside(f.filename, ours)]


def _source(filename: str, lineno: int) -> str:
    return linecache.getline(filename, lineno).strip()
