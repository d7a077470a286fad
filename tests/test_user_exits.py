"""User code that ends the process is a failure of the run, recorded as an exception is: a
``sys.exit(3)`` (at import or in ``forward``), an ``os._exit(4)`` and a segfault each end with
a failure in the log, in summary.json and in ``show``, naming what happened and the user's
line where there is one, never a silent exit."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import FIXTURES, run_cli, write_spec
from runs_support import TUILOOP, Tmux, new_run_dir, start_detached, summary, wait_until

from tuiloop.rundir.lock import is_locked

EXITS = '''
import ctypes
import os
import sys

from tiny import MLP


class Exits(MLP):
    """At its third forward call it ends the process as ``how`` says."""

    def __init__(self, how: str = "sys", **kwargs):
        super().__init__(**kwargs)
        self.how, self.calls = how, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 3:
            if self.how == "sys":
                sys.exit(3)  # line 20
            if self.how == "os":
                os._exit(4)  # line 22
            ctypes.string_at(0)  # line 23: a segfault
        return super().forward(x)
'''

IMPORT_EXIT = "import sys\n\nsys.exit(3)  # line 3\n"

CASES: dict[str, dict[str, str]] = {
    "sys.exit(3) in forward": {
        "how": "sys",
        "reason": "SystemExit in training",
        "said": "SystemExit: the code called sys.exit(3)",
        "line": "exits.py:20 in forward",
    },
    "os._exit(4) in forward": {
        "how": "os",
        "reason": "exited with status 4",
        "said": "the training process exited with status 4 without finishing: os._exit(4)",
        "line": "training, epoch 1",
    },
    "a segfault in forward": {
        "how": "segv",
        "reason": "killed by SIGSEGV (segmentation fault)",
        "said": "the training process was killed by SIGSEGV (segmentation fault) without finishing",
        "line": "exits.py:23 in forward",
    },
}


def user_folder(folder: Path) -> Path:
    shutil.copy(FIXTURES / "tiny.py", folder / "tiny.py")
    (folder / "exits.py").write_text(EXITS, encoding="utf-8")
    (folder / "import_exit.py").write_text(IMPORT_EXIT, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def ended(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One detached run per case, started together; each one's summary and ``show``."""
    folder = user_folder(tmp_path_factory.mktemp("exits"))
    runs = {}
    for case, c in CASES.items():
        spec = write_spec(folder, f"{c['how']}.toml", model={"target": "exits.py:Exits", "how": c["how"]})
        runs[case] = start_detached(spec, cwd=folder)
    out = {}
    for case, run_dir in runs.items():
        wait_until(lambda: summary(run_dir) and not is_locked(run_dir), 60, f"the run with {case} to end")  # noqa: B023
        out[case] = {"summary": summary(run_dir), "show": run_cli("show", run_dir, cwd=folder).stdout}
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_user_code_that_ends_the_process_fails_the_run_with_its_line(ended: dict[str, Any], case: str) -> None:
    c, s, shown = CASES[case], ended[case]["summary"], ended[case]["show"]
    assert (s["status"], s["reason"]) == ("failed", c["reason"]), s
    error = next(line for line in shown.splitlines() if line.startswith("error: "))
    assert c["said"] in error and c["line"] in error, shown
    assert f"finished: failed ({c['reason']})" in shown, shown


def test_sys_exit_at_import_is_a_spec_error_naming_the_line(tmp_path: Path) -> None:
    """Headless and detached alike: exit status 2 and one paragraph, not a silent status 3."""
    folder = user_folder(tmp_path)
    spec = write_spec(folder, model={"target": "import_exit.py:Model"})
    for mode in ("--headless", "--detach"):
        done = run_cli("run", spec, mode, cwd=folder)
        assert done.returncode == 2, (mode, done.stdout, done.stderr)
        assert "raised SystemExit: the code called sys.exit(3) (import_exit.py, line 3)" in done.stderr, done.stderr
        assert "started " not in done.stdout, "a run that failed while it started is not announced as started"


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_a_module_that_never_finishes_importing_shows_the_import_and_its_time(workdir: Path, tmux: Tmux) -> None:
    """The monitor opens at once on a run whose module hangs at import (before, the command
    imported it first, and the screen stayed blank): it says what the run is doing, and for
    how long; a second Ctrl+C ends it."""
    (workdir / "hangs.py").write_text("import time\n\ntime.sleep(3600)\n", encoding="utf-8")
    spec = write_spec(workdir, model={"target": "hangs.py:Model"})
    term = tmux.new("hangs", f"{TUILOOP} run {spec}", width=120, height=30)
    try:
        tmux.wait_for(term, r"starting: importing the spec's targets… [1-9]\.\ds", 60)
        run_dir = new_run_dir(workdir / "runs", set())
        tmux.send(term, "C-c")
        tmux.send(term, "C-c")
        tmux.wait_for(term, r"\[exit 130\]", 30)
        assert not is_locked(run_dir)
    finally:
        for p in psutil.process_iter(["cmdline"]):
            if "_train" in (p.info["cmdline"] or []) and str(workdir) in " ".join(p.info["cmdline"]):
                p.kill()
