"""Shared helpers: tiny specs written next to a copy of tests/fixtures/tiny.py, the real CLI."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from markers import mark

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
DEMOS = REPO / "demos"

sys.path.insert(0, str(FIXTURES))  # tests import tiny directly for the Python API

# A run samples the machine's load every 2 s into its log; a test that lists a log's events
# exactly would meet those samples at random. Off here (the commands run inherit it), unless a
# test turns it on: tests/test_system.py does.
os.environ.setdefault("TUILOOP_SYSTEM_INTERVAL", "0")
# The user's own ~/.config/tuiloop/config.toml (its [notify]) must not reach the tests' runs: an
# empty config folder of the tests' own; a test that needs one writes it there or sets its own.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="tuiloop-test-config-")

# Torch in this process on one thread, as in the processes the tests start (cli_env): the models
# are tiny, and on busy cores threads that wait for each other spin (the in-process demo runs took
# 150 s instead of 14 s on 2 busy cores). Set before anything imports torch; your own value wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config: pytest.Config) -> None:
    """In CI a missing tmux is an error: the real-terminal tests would be skipped silently."""
    if os.environ.get("CI") and shutil.which("tmux") is None:
        raise pytest.UsageError("CI needs tmux: the tests that drive tuiloop in a real terminal would be skipped")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``slow`` and ``tmux`` by what each test uses (tests/markers.py): ``pytest -m "not slow"`` is the fast loop."""
    for item in items:
        mark(item)


# A small multi-class run: 120 training samples, batch 16 -> 8 steps per epoch.
BASE_SPEC: dict[str, dict[str, Any]] = {
    "run": {"name": "tiny", "seed": 0, "device": "cpu", "epochs": 3, "log_interval": 0.05},
    "model": {"target": "tiny.py:MLP", "in_features": 4, "out_features": 3, "hidden": 16},
    "data": {"target": "tiny.py:classes", "batch_size": 16},
    "loss": {"target": "CrossEntropyLoss"},
    "optimizer": {"target": "Adam", "lr": 0.01},
}


def spec_data(**sections: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """BASE_SPEC with sections updated key by key; a section or key given as None is removed."""
    data = copy.deepcopy(BASE_SPEC)
    for name, table in sections.items():
        if table is None:
            data.pop(name, None)
            continue
        section = data.setdefault(name, {})
        for key, value in table.items():
            if value is None:
                section.pop(key, None)
            else:
                section[key] = value
    return data


def write_spec(
    folder: Path, name: str = "spec.toml", text: str | None = None, **sections: dict[str, Any] | None
) -> Path:
    """Write a spec into ``folder`` (runs go to ``folder/runs``); ``text`` is written verbatim."""
    from tuiloop.spec.dump import dump_toml

    if text is None:
        data = spec_data(**sections)
        data["run"].setdefault("out_dir", str(folder / "runs"))
        text = dump_toml(data)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A temp folder holding tiny.py, where specs and runs go."""
    shutil.copy(FIXTURES / "tiny.py", tmp_path / "tiny.py")
    return tmp_path


def cli_env() -> dict[str, str]:
    # gloo's own choice of interface is flaky on CI machines (Accelerate pins it too); a short
    # process-group timeout makes a hang fail fast instead of eating the CI time limit (a test
    # that sets its own in os.environ keeps it: the long-pause test sets one shorter than its pause)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    env.setdefault("TUILOOP_DIST_TIMEOUT", "60")
    env.pop("TERM", None)
    return env


def run_cli(*args: str | Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real command, ``python -m tuiloop ARGS``, with stdout/stderr piped (not a TTY)."""
    return subprocess.run(
        [sys.executable, "-m", "tuiloop", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=timeout,
        env=cli_env(),
    )


def start_cli(*args: str | Path, cwd: Path) -> subprocess.Popen:
    """The real command in the background, output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "tuiloop", *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )


def only_run(out_dir: Path) -> Path:
    """The one run directory under ``out_dir``."""
    runs = [p for p in out_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def load_ckpt(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Bitwise equality of two state dicts."""
    import torch

    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.fixture
def tmux(workdir: Path):
    """A private tmux server whose terminals start in ``workdir``; killed at teardown."""
    from runs_support import Tmux

    t = Tmux(workdir)
    yield t
    t.close()


@pytest.fixture
def cleanup():
    """Run directories whose training processes are killed at teardown, whatever happened."""
    from runs_support import kill_run

    dirs: list[Path] = []
    yield dirs
    for d in dirs:
        kill_run(d)
