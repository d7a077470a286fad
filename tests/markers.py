"""Which tests are ``slow`` and which drive a real terminal (``tmux``), read from what they call.

A helper that starts one of tuiloop's processes (the real CLI, a training process, torchrun) is
flagged :func:`starts_processes`; one that drives a real terminal, :func:`drives_a_terminal`.
A test is ``slow`` when it, a fixture it uses, or any function or class of tests/ that they name
(followed name by name, imports inside functions included) is flagged or uses ``subprocess``
or ``pty`` itself. So a new test is marked by what it does. A test that is slow in its own process
(torch.compile, transformers, a demo trained to a score) says so with ``pytest.mark.slow``.
"""

from __future__ import annotations

import functools
import inspect
import pty
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

TESTS = Path(__file__).resolve().parent
F = TypeVar("F", bound=Callable[..., Any])


def starts_processes(helper: F) -> F:
    """Flag a helper that starts a process: whoever names it is ``slow``."""
    helper.starts_processes = True  # type: ignore[attr-defined]
    return helper


def drives_a_terminal(helper: F) -> F:
    """Flag a helper that drives a real terminal: whoever names it is ``tmux`` and ``slow``."""
    helper.drives_a_terminal = True  # type: ignore[attr-defined]
    return starts_processes(helper)


@functools.cache
def _in_tests(module: str) -> bool:
    """A module of tests/ (asked once its tests are collected: they imported it)."""
    file = getattr(sys.modules.get(module), "__file__", None)
    return file is not None and Path(file).resolve().parent == TESTS


def _ours(obj: Any) -> bool:
    """A function or class defined in tests/."""
    return (inspect.isfunction(obj) or inspect.isclass(obj)) and _in_tests(obj.__module__)


def _names(code: types.CodeType) -> Iterator[str]:
    """The global, imported and attribute names a function's code uses, nested functions included."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


@functools.cache
def _named(obj: Any) -> tuple[Any, ...]:
    """What ``obj`` names: for a class its methods; for a function the values of the names its code
    uses, in its module or in a module of tests/ it imports inside itself."""
    if inspect.isclass(obj):
        return tuple(v for v in vars(obj).values() if inspect.isfunction(v))
    names = set(_names(obj.__code__))
    modules = [sys.modules[n] for n in names if n in sys.modules]  # `import subprocess` in a function
    scopes = [obj.__globals__] + [vars(m) for m in modules if _in_tests(m.__name__)]
    return (*modules, *(scope[n] for scope in scopes for n in names if n in scope))


@functools.cache
def _flags(root: Any) -> frozenset[str]:
    """The flags met from ``root`` on."""
    flags: set[str] = set()
    seen: set[int] = set()
    todo = [root]
    while todo:
        obj = inspect.unwrap(todo.pop())
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        flags |= {f for f in ("starts_processes", "drives_a_terminal") if getattr(obj, f, False)}
        named = _named(obj)
        if any(o is subprocess or o is pty for o in named):
            flags.add("starts_processes")
        todo += [o for o in named if _ours(inspect.unwrap(o))]
    return frozenset(flags)


def mark(item: pytest.Item) -> None:
    """Add ``slow`` and ``tmux`` to ``item`` where what it uses says so."""
    roots = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    for defs in info.name2fixturedefs.values() if info else ():
        roots += [d.func for d in defs]
    flags = set().union(*(_flags(r) for r in roots if r is not None and _ours(inspect.unwrap(r))))
    if "starts_processes" in flags:
        item.add_marker(pytest.mark.slow)
    if "drives_a_terminal" in flags:
        item.add_marker(pytest.mark.tmux)
