"""The README's Python examples run as written (from a scratch directory, on the bundled demo)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import DEMOS

from tuiloop import execute, load_spec

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def check_load_checkpoint(namespace: dict, out: str, tmp_path: Path) -> None:
    assert namespace["model"](torch.zeros(1, 64)).shape == (1, 10)


def check_execute(namespace: dict, out: str, tmp_path: Path) -> None:
    assert "Finished(" in out, out[-2000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "summary.json").is_file() and (runs[0] / "checkpoints" / "best.pt").is_file()
    assert out.rstrip().splitlines()[-1] == f"0 {runs[0]}"


def check_trainer(namespace: dict, out: str, tmp_path: Path) -> None:
    assert "Finished(" in out, out[-2000:]
    assert out.rstrip().splitlines()[-1].startswith(("completed ", "early_stopped "))
    run_dir = tmp_path / "runs" / "from-python"
    assert {"run.json", "events.jsonl", "summary.json"} <= {p.name for p in run_dir.iterdir()}


def check_track(namespace: dict, out: str, tmp_path: Path) -> None:
    assert out.rstrip().splitlines()[-1].startswith("completed "), out[-2000:]
    run_dir = tmp_path / "runs" / "my-loop"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["epochs_done"], summary["steps"]) == ("completed", 5, 65)
    assert json.loads((run_dir / "run.json").read_text())["config"] == {"lr": 1e-3, "batch_size": 32}
    assert (run_dir / "checkpoints" / "best.pt").is_file() and not (run_dir / "control.sock").exists()
    kinds = [json.loads(line)["event"] for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert kinds[0] == "run_started" and kinds.count("validated") == 5 and kinds[-1] == "finished"


# Each README block, told apart by a line only it has, and what running it must give.
CHECKS = {
    'ckpt = torch.load("runs/digits-mlp-...': check_load_checkpoint,
    "code, run_dir = tuiloop.execute(spec": check_execute,
    "trainer = Trainer(": check_trainer,
    'with tuiloop.track("runs/my-loop"': check_track,
}


def test_every_readme_block_is_checked() -> None:
    blocks = python_blocks()
    assert [sum(marker in block for marker in CHECKS) for block in blocks] == [1] * len(blocks)
    assert len(blocks) == len(CHECKS)


@pytest.mark.parametrize("marker", list(CHECKS))
def test_readme_python_example_runs(
    marker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (code,) = [block for block in python_blocks() if marker in block]
    monkeypatch.chdir(tmp_path)
    code = code.replace('"demos/digits.toml"', repr(str(DEMOS / "digits.toml")))
    if CHECKS[marker] is check_load_checkpoint:  # loading a checkpoint: make one with the real demo first
        spec = load_spec(DEMOS / "digits.toml", ["run.epochs=2", f"run.out_dir={tmp_path / 'made'}"])
        _, run_dir = execute(spec, handle_signals=False)
        code = code.replace('"runs/digits-mlp-.../checkpoints/best.pt"', repr(str(run_dir / "checkpoints" / "best.pt")))
        monkeypatch.syspath_prepend(str(DEMOS))
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code, f"README.md python block {marker!r}", "exec"), namespace)
    CHECKS[marker](namespace, capsys.readouterr().out, tmp_path)


def test_the_readme_lists_every_key_of_the_monitor() -> None:
    """Each key the monitor binds (and its ``?`` list) has a row in the README's keys table."""
    from tuiloop.tui.app import MonitorApp

    table = README.read_text().split("| key | |", 1)[1].split("\n\n", 1)[0]
    keys = {b.key_display or b.key for b in MonitorApp.BINDINGS if b.show}
    missing = [k for k in keys if f"`{k}`" not in table]
    assert not missing, f"keys missing from the README's table: {missing}"
