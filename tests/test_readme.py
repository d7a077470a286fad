"""The README's Python examples run as written (from a scratch directory, on the bundled demo)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import DEMOS

from tuiloop import execute, load_spec

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_example_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code = python_blocks()[index]
    monkeypatch.chdir(tmp_path)
    code = code.replace('"demos/digits.toml"', repr(str(DEMOS / "digits.toml")))
    if "runs/digits-mlp-..." in code:  # loading a checkpoint: make one with the real demo first
        spec = load_spec(DEMOS / "digits.toml", ["run.epochs=2", f"run.out_dir={tmp_path / 'made'}"])
        _, run_dir = execute(spec, handle_signals=False)
        code = code.replace('"runs/digits-mlp-.../checkpoints/best.pt"', repr(str(run_dir / "checkpoints" / "best.pt")))
        monkeypatch.syspath_prepend(str(DEMOS))
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    out = capsys.readouterr().out
    if "load_state_dict" in code:
        assert namespace["model"](torch.zeros(1, 64)).shape == (1, 10)
        return
    assert "Finished(" in out, out[-2000:]
    if "execute(" in code:
        runs = list((tmp_path / "runs").iterdir())
        assert len(runs) == 1 and (runs[0] / "summary.json").is_file() and (runs[0] / "checkpoints" / "best.pt").is_file()
        assert out.rstrip().splitlines()[-1] == f"0 {runs[0]}"
    else:
        assert out.rstrip().splitlines()[-1].startswith(("completed ", "early_stopped "))
