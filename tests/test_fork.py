"""``tuiloop run --fork RUN [--from ...]``: a new run from a checkpoint of another, exact without
edits, with edits under the resume rules; the parent is only read; refusals leave nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import assert_same_weights, run_cli, write_spec
from runs_support import events, wait_until

from tuiloop.engine.checkpoint import load as load_ckpt
from tuiloop.rundir.layout import read_json
from tuiloop.rundir.lock import is_locked

pytestmark = pytest.mark.slow


def tree(run_dir: Path) -> dict[str, str]:
    """Every file of a run directory with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != "run.lock"
    }


def weights(path: Path) -> dict:
    return load_ckpt(path.read_bytes())["model_state_dict"]


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-epoch run that kept a checkpoint of every epoch."""
    workdir = tmp_path_factory.mktemp("fork")
    (workdir / "tiny.py").write_text((Path(__file__).parent / "fixtures" / "tiny.py").read_text())
    spec = write_spec(workdir, run={"epochs": 4}, checkpoint={"every_n_epochs": 1})
    done = run_cli("run", spec, "--headless", cwd=workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    (run_dir,) = (workdir / "runs").iterdir()
    return run_dir


def new_runs(out_dir: Path, before: set[Path]) -> list[Path]:
    return [p for p in out_dir.iterdir() if p.is_dir() and p not in before]


def test_a_fork_of_an_epoch_checkpoint_without_edits_ends_bitwise_as_the_uninterrupted_run(parent: Path) -> None:
    """Forked at epoch 2 and run to the same end: the same weights, bit for bit, as the parent's
    last.pt; the fork's log holds the parent's epochs 1-2, then its own 3-4; the parent is unchanged."""
    before, runs = tree(parent), set(parent.parent.iterdir())
    done = run_cli("run", "--fork", parent, "--from", "epoch-0002.pt", "--headless", cwd=parent.parent.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    (fork,) = new_runs(parent.parent, runs)
    assert tree(parent) == before, "a fork never writes into its parent"
    assert_same_weights(weights(fork / "checkpoints" / "last.pt"), weights(parent / "checkpoints" / "last.pt"))
    info = read_json(fork / "run.json")
    assert info is not None and info["forked_from"]["run"] == str(parent)
    assert (info["forked_from"]["checkpoint"], info["forked_from"]["epoch"]) == ("checkpoints/epoch-0002.pt", 2)
    evs = events(fork)
    assert [e["epoch"] for e in evs if e["event"] == "validated"] == [1, 2, 3, 4]
    (note,) = [e for e in evs if e["event"] == "message" and e["text"].startswith("forked from")]
    assert note["text"] == f"forked from {parent.name} at epoch 2, step 16 (checkpoints/epoch-0002.pt)"
    assert [e["resumed_from"] for e in evs if e["event"] == "run_started"] == [
        None,
        str(fork / "checkpoints" / "last.pt"),
    ]


def test_a_detached_fork_of_best_with_a_lower_lr_logs_the_edit_and_shows_the_whole_curve(parent: Path) -> None:
    workdir = parent.parent.parent
    runs = set(parent.parent.iterdir())
    done = run_cli("run", "--fork", parent, "--from", "best", "--set", "optimizer.lr=0.001", "--detach", cwd=workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    (fork,) = new_runs(parent.parent, runs)
    assert done.stdout.startswith(f"started {fork} ")
    wait_until(lambda: (fork / "summary.json").exists() and not is_locked(fork), 120, "the fork to finish")
    evs = events(fork)
    (edit,) = [e for e in evs if e["event"] == "setting_changed" and e["key"] == "optimizer.lr"]
    assert (edit["old"], edit["new"]) == (0.01, 0.001)
    best = read_json(fork / "run.json")["forked_from"]["epoch"]  # type: ignore[index]
    assert [e["epoch"] for e in evs if e["event"] == "validated"] == [*range(1, best + 1), *range(best + 1, 5)]
    shown = run_cli("show", fork, cwd=workdir)
    assert shown.returncode == 0 and "forked from" in shown.stdout, shown.stdout
    compared = run_cli("compare", parent, fork, cwd=workdir)
    assert compared.returncode == 0 and parent.name in compared.stdout and fork.name in compared.stdout
    exported = run_cli("export", fork, "-o", "-", cwd=workdir).stdout.splitlines()
    header = exported[0].split(",")
    val_epochs = {row.split(",")[header.index("epoch")] for row in exported[1:] if row.startswith("val")}
    assert val_epochs == {"1", "2", "3", "4"}, exported[:3]  # the parent's epochs, then the fork's


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--from", "epoch-0009.pt"], "there is no checkpoints/epoch-0009.pt to resume from"),
        (["--set", "model.hidden=32"], "model"),
        (["--resume", "."], "--fork and --resume together"),
        (["--from", "/elsewhere/epoch-0002.pt"], "not a checkpoint of tiny-"),
    ],
)
def test_a_refused_fork_says_why_and_leaves_nothing(parent: Path, args: list[str], problem: str) -> None:
    before, runs = tree(parent), set(parent.parent.iterdir())
    done = run_cli("run", "--fork", parent, *args, "--headless", cwd=parent.parent.parent)
    assert done.returncode == 2, done.stdout + done.stderr
    assert problem in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert new_runs(parent.parent, runs) == [] and tree(parent) == before
