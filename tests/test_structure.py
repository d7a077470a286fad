"""The shape of the package, as a newcomer who must change it meets it: small modules, imports
that go one way (no cycles, counting imports inside functions), an engine without UI imports,
and a monitor that never loads torch."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import run_cli, write_spec

PACKAGE = Path(__file__).resolve().parents[1] / "tuiloop"
MAX_LINES = 400


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its ``__init__``)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        out.update(t for t in targets if t in known and t != name)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_is_over_400_lines() -> None:
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by idea: {long}"


def test_the_package_has_no_import_cycle_counting_imports_inside_functions() -> None:
    found = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in found.items():
        graph[name] = imports(name, path, set(found))
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    """The check above can fail: two modules that import each other, one of them in a function."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import x\n")
    graph = {m: imports(m, tmp_path / f"{m}.py", {"a", "b"}) for m in ("a", "b")}
    assert cycles(graph) == [["a", "b"]]


@pytest.mark.parametrize("package, banned", [("engine", ("textual", "rich")), ("tui", ("torch",))])
def test_a_layer_does_not_import_what_it_must_not(package: str, banned: tuple[str, ...]) -> None:
    """The engine has no UI imports; the monitor has no torch, not even inside a function."""
    bad = [
        f"{path.name}: {name}"
        for path in (PACKAGE / package).rglob("*.py")
        for name in absolute_imports(path)
        if name.split(".")[0] in banned
    ]
    assert not bad, bad


def absolute_imports(path: Path) -> list[str]:
    """Every module ``path`` imports by its absolute name, at its top or inside a function."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.append(node.module or "")
    return names


def test_only_an_integration_imports_the_library_it_integrates() -> None:
    """transformers, accelerate and lightning come with extras: the core never imports them, not
    even inside a function; tuiloop.integrations.transformers and .lightning do, and nothing
    imports those."""
    libraries = ("transformers", "accelerate", "lightning", "pytorch_lightning")
    bad = []
    for path in PACKAGE.rglob("*.py"):
        inside = "integrations" in path.relative_to(PACKAGE).parts
        for name in absolute_imports(path):
            if (name.split(".")[0] in libraries and not inside) or name.startswith("tuiloop.integrations"):
                bad.append(f"{path.relative_to(PACKAGE)}: {name}")
    assert not bad, bad
    assert "transformers" in absolute_imports(PACKAGE / "integrations" / "transformers.py"), "the check can fail"
    assert "lightning.pytorch" in absolute_imports(PACKAGE / "integrations" / "lightning.py"), "the check can fail"


def test_the_monitor_and_the_views_never_load_torch() -> None:
    """What the monitor process imports (the app, the CLI's views) leaves torch unloaded."""
    code = (
        "import sys\n"
        "import tuiloop.tui.app, tuiloop.cli.main, tuiloop.cli.views, tuiloop.cli.ls, tuiloop.cli.compare\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# ---- code habits: lazy imports say why, type: ignores say why, long lines are messages -------
LAZY = "# lazy: "
IGNORE = re.compile(r"#\s*type:\s*ignore")
EXPLAINED = re.compile(r"# type: ignore\[[\w\-, ]+\]  # \S")
MAX_COLUMNS = 120


def unmarked_lazy_imports(path: Path) -> list[str]:
    """``file:line`` of each import inside a function whose (first) line gives no ``# lazy: <reason>``."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    marker = lines[inner.lineno - 1].partition(LAZY)[2]
                    if not marker.strip():
                        found.add(inner.lineno)
    return [f"{path}:{n}" for n in sorted(found)]


def _comments(text: str) -> list[tuple[int, str]]:
    return [
        (t.start[0], t.string)
        for t in tokenize.generate_tokens(io.StringIO(text).readline)
        if t.type == tokenize.COMMENT
    ]


def unexplained_ignores(path: Path) -> list[str]:
    """``file:line`` of each ``# type: ignore`` without an error code and a ``# <reason>`` after it."""
    return [
        f"{path}:{n}: {comment}"
        for n, comment in _comments(path.read_text(encoding="utf-8"))
        if IGNORE.search(comment) and not EXPLAINED.search(comment)
    ]


def long_code_lines(path: Path) -> list[str]:
    """``file:line`` of each line over 120 columns that is not long because of a string (a message
    stays whole so it can be grepped; code and comments wrap)."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    strings: dict[int, int] = defaultdict(int)  # line -> its longest string literal (f-strings whole)
    depth, start = 0, (0, 0)
    fstring_start = getattr(tokenize, "FSTRING_START", None)  # Python 3.12 splits f-strings into tokens
    fstring_end = getattr(tokenize, "FSTRING_END", None)
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == fstring_start:
            depth, start = depth + 1, tok.start if depth == 0 else start
            continue
        if tok.type == fstring_end:
            depth -= 1
            span = (start, tok.end) if depth == 0 else None
        else:
            span = (tok.start, tok.end) if tok.type == tokenize.STRING and depth == 0 else None
        if span is None:
            continue
        (first, a), (last, b) = span
        for n in range(first, last + 1):
            width = (b if n == last else len(lines[n - 1])) - (a if n == first else 0)
            strings[n] = max(strings[n], width)
    return [
        f"{path}:{n} ({len(line)} columns)"
        for n, line in enumerate(lines, 1)
        if len(line) > MAX_COLUMNS and len(line) - strings[n] > MAX_COLUMNS
    ]


def test_every_import_inside_a_function_says_why_it_is_lazy() -> None:
    """A function-level import stays only to keep torch or textual out of a process that does not
    need it, for an optional dependency, or to come after what the process says first."""
    bad = [where for path in sorted(PACKAGE.rglob("*.py")) for where in unmarked_lazy_imports(path)]
    assert not bad, "move these to the module's top, or say why they wait (# lazy: <reason>):\n" + "\n".join(bad)


def test_every_type_ignore_names_its_code_and_its_reason() -> None:
    bad = [where for path in sorted(PACKAGE.rglob("*.py")) for where in unexplained_ignores(path)]
    assert not bad, "fix the types, or write # type: ignore[code]  # <why>:\n" + "\n".join(bad)


def test_no_line_is_over_120_columns_but_for_a_message_string() -> None:
    bad = [where for path in sorted(PACKAGE.rglob("*.py")) for where in long_code_lines(path)]
    assert not bad, bad


def test_the_habit_checks_find_what_they_look_for(tmp_path: Path) -> None:
    """The three checks above can fail: each finds its mistake in a module made for it."""
    path = tmp_path / "m.py"
    message = "x" * 130
    path.write_text(
        "import os  # a module-level import needs no reason\n"
        "def f():\n"
        "    import json\n"
        "    import sys  # lazy:\n"
        "    from pathlib import (  # lazy: a reason on the first line\n"
        "        Path,\n"
        "    )\n"
        "    def g():\n"
        "        import re  # lazy: nested functions count too\n"
        "        import csv\n"
        "a = 1  # type: ignore\n"
        "b = 2  # type: ignore[misc]\n"
        "c = 3  # type: ignore[misc]  # a reason\n"
        "d = '# type: ignore in a string is no comment'\n"
        f"e = {'[1]' + ' + [1]' * 40}\n"
        f"f = print('{message}')\n"
        f"g = print(f'{{a}} {message}')\n"
        f"h = 1  # {message}\n",
        encoding="utf-8",
    )
    assert unmarked_lazy_imports(path) == [f"{path}:3", f"{path}:4", f"{path}:10"]
    assert [w.split(": ")[0] for w in unexplained_ignores(path)] == [f"{path}:11", f"{path}:12"]
    assert [w.split(" ")[0] for w in long_code_lines(path)] == [f"{path}:15", f"{path}:18"]


def test_ls_and_a_piped_show_load_neither_torch_nor_textual(workdir: Path) -> None:
    """What ``tuiloop ls`` and ``tuiloop show RUN | cat`` import (``python -X importtime``), on a real run."""
    done = run_cli("run", write_spec(workdir, run={"epochs": 1}), cwd=workdir)
    assert done.returncode == 0, done.stderr
    run = next((workdir / "runs").iterdir())

    def loaded(*args: str) -> tuple[str, set[str]]:
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "tuiloop", *args],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        names = re.findall(r"^import time:.*\|\s*([\w.]+)$", out.stderr, re.M)
        assert "tuiloop.cli.main" in names  # the import times were read
        return out.stdout, {name.split(".")[0] for name in names}

    listed, ls_modules = loaded("ls")
    shown, show_modules = loaded("show", run.name)
    assert run.name in listed and "finished: completed" in shown
    assert not {"torch", "textual", "numpy"} & ls_modules
    assert not {"torch", "textual"} & show_modules
