"""``tuiloop eval``: a saved checkpoint of a run, evaluated on one of its splits with the run's own spec.

The run directory is only read: its spec.toml (with ``--set`` edits, for example other data
arguments), and one checkpoint, read once and checked against the SHA-256 its save recorded in
the event log (:func:`tuiloop.rundir.checkpoints.read_checked`). The model, data, loss and
``[metrics]`` are built in this process as a run builds them, and the split is evaluated as
validation is (:meth:`tuiloop.engine.epoch_end.EpochEnd.evaluate`). Nothing is written; no lock
is taken, so a live run goes on untouched.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuiloop.engine import checkpoint as ckpt
from tuiloop.engine.exceptions import ResumeError
from tuiloop.rundir.checkpoints import Checked, CheckpointRefused, read_checked
from tuiloop.rundir.handle import RunDir, RunDirError
from tuiloop.rundir.layout import CHECKPOINTS, SPEC
from tuiloop.rundir.records import read_info
from tuiloop.rundir.state import run_state
from tuiloop.runner.fork import checkpoint_name
from tuiloop.runner.spec_run import load_run_spec
from tuiloop.spec import Spec, SpecError, resolve
from tuiloop.spec.load import apply_override, validate

SPLITS = ("val", "test")
SPLIT_NAMES = {"val": "validation", "test": "test"}


@dataclass(frozen=True)
class Evaluation:
    """What ``tuiloop eval`` found: the checkpoint, the split and each metric's value."""

    run: str
    checkpoint: str  # checkpoints/best.pt
    sha256: str
    epoch: int | None
    step: int | None
    split: str  # val | test
    samples: int | None
    metrics: dict[str, float]  # val_loss, val_acc, ... or test_loss, ...
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        """The object ``--json`` prints."""
        return dict(self.__dict__)


class EvalFailed(Exception):
    """The user's code raised while the split was evaluated (exit 1): ``__cause__`` says what."""


def eval_spec(run_dir: Path, overrides: list[str]) -> Spec:
    """The run's saved spec with ``overrides`` (``section.key=value``) applied, compiled off."""
    where = f"eval {run_dir}"
    if not (run_dir / SPEC).is_file():
        info, _ = read_info(run_dir)
        how = "tracked from your own loop (tuiloop.track)" if info.get("tracked") else "trained from Python"
        raise SpecError(
            where,
            f"the run has no spec.toml: it was {how}, so tuiloop cannot build its model and data",
            "Evaluate it in Python: load model_state_dict from its checkpoint (torch.load(path, weights_only=True)).",
        )
    spec = load_run_spec(run_dir)
    raw = copy.deepcopy(spec.raw)
    for item in overrides:
        apply_override(raw, item)
    raw.setdefault("train", {})["compile"] = False  # one pass over a split: compiling would cost more than it saves
    return validate(raw, spec.where, spec.base_dir, spec.path)


def checked_checkpoint(run_dir: Path, source: str, wait_s: float = 1.0) -> Checked:
    """The checkpoint ``source`` (best, last, or a file name of checkpoints/), read once and
    checked against the log; refused as one paragraph (exit 2) when missing or damaged."""
    where = f"eval {run_dir}, --checkpoint {source}"
    name = checkpoint_name(source, run_dir)
    try:
        with RunDir.open(run_dir) as home:
            with home.subdir(CHECKPOINTS) as folder:
                there = sorted(n for n in folder.names() if n.endswith(".pt") and not n.startswith("."))
            if name not in there:
                problem = f"the run has no {CHECKPOINTS}/{name}"
                if name == "best.pt":
                    problem += " (it saves one only with [checkpoint] best = true, after a check that improved)"
                raise SpecError(where, problem, _choices(there))
            checked = read_checked(home, name)
            if checked.unrecorded and run_state(run_dir).live:  # written, and its save not yet logged
                time.sleep(wait_s)
                checked = read_checked(home, name)
    except RunDirError as e:
        raise SpecError(where, e.problem, f"{e.fix}.") from None
    except CheckpointRefused as e:
        raise SpecError(where, e.problem, _choices([n for n in there if n != name])) from None
    if checked.unrecorded:
        raise SpecError(where, checked.mismatch(), _choices([n for n in there if n != name]))
    return checked


def _choices(names: list[str]) -> str:
    if not names:
        return "The run has no other checkpoint to evaluate."
    return (
        f"Evaluate one it has: --checkpoint NAME, one of {', '.join(names)} (best and last name best.pt and last.pt)."
    )


def evaluate_run(run_dir: Path, source: str = "best", split: str = "test", overrides: Sequence[str] = ()) -> Evaluation:
    """Evaluate the checkpoint ``source`` of ``run_dir`` on ``split``; :class:`SpecError` for a
    refusal (exit 2), :class:`EvalFailed` when the user's code raised while evaluating (exit 1)."""
    from tuiloop.runner.build import build_trainer  # lazy: torch and the user's code, after the checks

    if split not in SPLITS:
        raise SpecError(f"eval --split {split}", "there is no such split", "Pass --split val or --split test.")
    spec = eval_spec(run_dir, list(overrides))
    checked = checked_checkpoint(run_dir, source)
    where = f"eval {run_dir}, --checkpoint {source}"
    try:
        state = ckpt.load(checked.data)
    except ResumeError as e:
        raise SpecError(where, f"{checked.name} cannot be evaluated: {e}", _choices([])) from None
    trainer = build_trainer(resolve(spec))
    test = trainer.final_test.batches if trainer.final_test is not None else None
    batches = trainer.val_batches if split == "val" else test
    if batches is None:
        returns = "(train, val, test)" if split == "test" else "(train, val) with a validation split that is not empty"
        raise SpecError(
            f"eval {run_dir}, --split {split}",
            f"{spec.data.target} returns no {SPLIT_NAMES[split]} split",
            f"Make it return {returns}, or evaluate the other split (--split {'val' if split == 'test' else 'test'}); "
            "--set data.KEY=VALUE changes its arguments.",
        )
    try:
        ckpt.unwrap(trainer.model).load_state_dict(state["model_state_dict"])
    except RuntimeError as e:
        first = " ".join(str(e).strip().splitlines()[:2])
        raise SpecError(
            where,
            f"{checked.name} holds the weights of another model: {first}",
            "Evaluate with the [model] the run was trained with (leave [model] out of --set).",
        ) from None
    trainer.objective.problem = state.get("problem")
    started = time.perf_counter()
    try:
        metrics = trainer.ends.evaluate(batches, f"{split}_")
    except Exception as e:
        raise EvalFailed(f"evaluating {checked.name} on the {SPLIT_NAMES[split]} split") from e
    finally:
        batches.close()
    return Evaluation(
        str(run_dir),
        checked.name,
        checked.sha256,
        int(state["epoch"]),
        int(state["step"]),
        split,
        batches.num_samples,
        metrics,
        time.perf_counter() - started,
    )
