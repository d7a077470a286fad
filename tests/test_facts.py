"""Facts the data tells the model, and tokens/s, as a user meets them.

The data function ``tiny.py:tokens`` returns (train, val, {"vocab_size": 11}); ``tiny.py:TinyLM``
needs ``vocab_size`` and computes its own loss on (batch, seq) token ids. One finished run (a
module fixture) is shown and evaluated; the resumes work on copies of it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import FIXTURES, load_ckpt, only_run, run_cli, write_spec
from runs_support import ended, events, start_detached, wait_until

from tuiloop.engine.events import RunStarted, TrainSteps
from tuiloop.engine.objective import LossFunction, ModelLoss, count_tokens
from tuiloop.spec.load import tomllib
from tuiloop.tui.model import MonitorModel
from tuiloop.tui.panels.bars import progress_text

VOCAB, SEQ = 11, 8
LM: dict[str, dict[str, Any]] = {
    "model": {"target": "tiny.py:TinyLM", "in_features": None, "out_features": None, "hidden": None},
    "data": {"target": "tiny.py:tokens", "batch_size": 8},
    "loss": {"target": "model"},
    "run": {"epochs": 2},
}


def lm_spec(folder: Path, **sections: dict[str, Any]) -> Path:
    """The token-model spec, ``sections`` updating it key by key (None removes a key)."""
    merged = {name: dict(table) for name, table in LM.items()}
    for name, table in sections.items():
        merged.setdefault(name, {}).update(table)
    return write_spec(folder, **merged)


def saved_spec(run_dir: Path) -> dict:
    return tomllib.loads((run_dir / "spec.toml").read_text(encoding="utf-8"))


def refusal(done: subprocess.CompletedProcess) -> str:
    """A refusal as the user reads it: exit 2, one paragraph, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    text = done.stderr.strip()
    assert text.startswith("tuiloop: error: ") and "\n" not in text and "Traceback" not in text, text
    return text


@dataclass
class Finished:
    work: Path
    done: subprocess.CompletedProcess

    @property
    def run_dir(self) -> Path:
        return only_run(self.work / "runs")

    def copy(self, to: Path) -> Path:
        """A copy of the finished run, to resume without touching the shared one."""
        shutil.copy(FIXTURES / "tiny.py", to / "tiny.py")
        shutil.copy(self.work / "spec.toml", to / "spec.toml")
        return Path(shutil.copytree(self.run_dir, to / "runs" / self.run_dir.name))


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    work = tmp_path_factory.mktemp("facts")
    shutil.copy(FIXTURES / "tiny.py", work / "tiny.py")
    return Finished(work, run_cli("run", lm_spec(work), "--headless", cwd=work))


# ---- facts ---------------------------------------------------------------------------------------
def test_the_datas_facts_fill_the_model_and_are_recorded_in_the_saved_spec(finished: Finished) -> None:
    done = finished.done
    assert done.returncode == 0, done.stderr
    assert "the data's facts filled [model] vocab_size = 11" in done.stdout
    saved = saved_spec(finished.run_dir)
    assert saved["facts"] == {"vocab_size": VOCAB} and "vocab_size" not in saved["model"]
    weights = load_ckpt(finished.run_dir / "checkpoints" / "best.pt")["model_state_dict"]
    assert weights["embed.weight"].shape == (VOCAB, 8)
    shown = run_cli("show", finished.run_dir, cwd=finished.work)
    assert shown.returncode == 0 and "the data's facts filled [model] vocab_size = 11" in shown.stdout


def test_a_detached_run_records_the_facts_its_training_process_found(workdir: Path, cleanup: list[Path]) -> None:
    """The monitor's way: the run directory (and its spec.toml) is made before the training process
    loads the data; that process writes the facts into spec.toml."""
    run_dir = start_detached(lm_spec(workdir, run={"epochs": 1}), cwd=workdir)
    cleanup.append(run_dir)
    s = wait_until(lambda: ended(run_dir), 60, "the detached run to end")
    assert s["status"] == "completed", s
    assert saved_spec(run_dir)["facts"] == {"vocab_size": VOCAB}


def test_eval_of_a_run_built_from_facts_uses_them_and_refuses_data_that_tells_otherwise(finished: Finished) -> None:
    import json

    done = run_cli("eval", finished.run_dir, "--split", "val", "--json", cwd=finished.work)
    assert done.returncode == 0, done.stderr
    best = [e for e in events(finished.run_dir) if e["event"] == "validated" and e["is_best"]][-1]
    assert json.loads(done.stdout)["metrics"]["val_loss"] == pytest.approx(best["metrics"]["val_loss"], rel=1e-5)
    text = refusal(run_cli("eval", finished.run_dir, "--split", "val", "--set", "data.vocab=12", cwd=finished.work))
    assert "[facts] vocab_size" in text and "now tells vocab_size = 12" in text and "built with vocab_size = 11" in text


def test_a_plain_resume_and_a_resume_with_the_users_own_spec_go_on_with_the_facts(
    finished: Finished, tmp_path: Path
) -> None:
    run_dir = finished.copy(tmp_path)
    done = run_cli("run", "--resume", run_dir, "--set", "run.epochs=3", "--headless", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "epoch 3/3" in done.stdout and saved_spec(run_dir)["facts"] == {"vocab_size": VOCAB}
    # the spec file the run started from has no [facts]: the run's recorded ones still count
    done = run_cli(
        "run", tmp_path / "spec.toml", "--resume", run_dir, "--set", "run.epochs=4", "--headless", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "epoch 4/4" in done.stdout and saved_spec(run_dir)["facts"] == {"vocab_size": VOCAB}
    # the same value said in [model]: the model is the same, so the resume rule lets it be
    done = run_cli(
        "run", "--resume", run_dir, "--set", "run.epochs=5", "--set", "model.vocab_size=11", "--headless", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert saved_spec(run_dir)["model"]["vocab_size"] == VOCAB and "facts" not in saved_spec(run_dir)


def test_a_resume_refuses_another_model_size_whether_the_spec_or_the_data_says_it(
    finished: Finished, tmp_path: Path
) -> None:
    run_dir = finished.copy(tmp_path)
    before = (run_dir / "spec.toml").read_bytes()
    text = refusal(run_cli("run", "--resume", run_dir, "--set", "model.vocab_size=12", "--headless", cwd=tmp_path))
    assert "[model] vocab_size" in text and "changed from 11 to 12" in text
    # the data changed since (here its code; a file on disk does the same): it tells another size
    tiny = tmp_path / "tiny.py"
    tiny.write_text(tiny.read_text().replace("vocab: int = 11", "vocab: int = 12"))
    text = refusal(run_cli("run", tmp_path / "spec.toml", "--resume", run_dir, "--headless", cwd=tmp_path))
    assert "[facts] vocab_size" in text and "now tells vocab_size = 12" in text
    assert (run_dir / "spec.toml").read_bytes() == before  # refused: the run is as it was


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"fact": "vocab"}, ["returned the fact vocab = 11, but tiny.py:TinyLM has no such argument", "'vocab_size'"]),
        ({"as_vocabulary": True}, ["the fact vocab_size = {", "must be a number, a string, a boolean or a list"]),
        ({"fact": ""}, ["tiny.py:TinyLM needs 'vocab_size', which has no default", "as a fact"]),
    ],
    ids=["no-such-argument", "not-a-toml-value", "no-fact-at-all"],
)
def test_bad_facts_are_refused_in_one_paragraph(workdir: Path, data: dict, says: list[str]) -> None:
    text = refusal(run_cli("run", lm_spec(workdir, data=data), "--headless", cwd=workdir))
    for needle in says:
        assert needle in text, text
    assert not (workdir / "runs").exists() or not any((workdir / "runs").iterdir())


def test_the_specs_own_value_wins_over_a_fact_and_is_told(workdir: Path) -> None:
    done = run_cli("run", lm_spec(workdir, model={"vocab_size": 13}, run={"epochs": 1}), "--headless", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert "warning: [model] vocab_size = 13 is the spec's own, though tiny.py:tokens tells vocab_size = 11" in (
        done.stdout + done.stderr
    )
    run_dir = only_run(workdir / "runs")
    assert "facts" not in saved_spec(run_dir)
    assert load_ckpt(run_dir / "checkpoints" / "last.pt")["model_state_dict"]["embed.weight"].shape == (13, 8)


# ---- tokens/s ------------------------------------------------------------------------------------
def test_show_tells_tokens_per_second_beside_samples_per_second(finished: Finished) -> None:
    steps = [e for e in events(finished.run_dir) if e["event"] == "train_steps"]
    assert steps and all(e["tokens_per_s"] == pytest.approx(SEQ * e["samples_per_s"]) for e in steps)
    shown = run_cli("show", finished.run_dir, cwd=finished.work)
    found = re.search(r"throughput: ([\d,]+) samples/s, ([\d,]+) tokens/s", shown.stdout)
    assert found, shown.stdout
    samples, tokens = (int(g.replace(",", "")) for g in found.groups())
    assert samples > 0 and abs(tokens - SEQ * samples) <= SEQ


def test_the_tokens_rule_reads_integer_batch_by_seq_inputs_only() -> None:
    ids = torch.zeros(4, 16, dtype=torch.long)
    assert count_tokens(*LossFunction(torch.nn.CrossEntropyLoss()).split((ids, ids))[:2]) == 64
    assert count_tokens(*ModelLoss().split((ids, ids))[:2]) == 64  # a model computing its own loss
    assert count_tokens(*ModelLoss().split({"attention_mask": ids[:, :2], "input_ids": ids})[:2]) == 64
    assert count_tokens((ids.int(),), {}) == 64
    assert count_tokens((torch.zeros(4, 16),), {}) == 0  # features, not token ids
    assert count_tokens((torch.zeros(4, dtype=torch.long),), {}) == 0  # class indices
    assert count_tokens((torch.zeros(4, 3, 16, dtype=torch.long),), {}) == 0
    assert count_tokens((torch.zeros(4, 16, dtype=torch.bool),), {}) == 0


def test_the_progress_line_shows_tokens_per_second_only_for_token_batches() -> None:
    def line(tokens: float | None) -> str:
        m = MonitorModel("/runs/lm-1")
        m.apply(
            RunStarted(
                run_name="lm", run_dir="/runs/lm-1", device="cpu", device_name="cpu", epochs=2, steps_per_epoch=6,
                batch_size=8, train_size=48, val_size=16, problem="model", metrics=["train_loss", "val_loss"],
                monitor="val_loss", mode="min", patience=None, num_params=187, time=1.0,
            )
        )  # fmt: skip
        m.apply(TrainSteps(1, 1, [2.5, 2.4], 2, 0.01, 1000.0, tokens_per_s=tokens, time=2.0))
        return progress_text(m, 2.0, 160).plain

    assert "1,000 samples/s" in line(8000.0) and "8,000 tokens/s" in line(8000.0)
    assert "1,000 samples/s" in line(None) and "tokens/s" not in line(None)
