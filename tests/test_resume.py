"""``tuiloop run --resume`` where users push: a live run, a resume that cannot work, and edits.

A resume aimed at a live run refuses and leaves it alone; a resume that fails leaves the run
directory exactly as it was; edits that may change are applied from the resumed step on and
recorded; edits that would break the run are refused naming the key.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, load_ckpt, only_run, run_cli, write_spec
from runs_support import answers, events, kill_run, last_step, start_detached, wait_live, wait_until

from tuiloop.rundir.layout import read_json

TWO_EPOCHS = dict(run={"epochs": 2})


def files_state(run_dir: Path) -> dict[str, tuple[str, float]]:
    """Every file of a run directory: its content's hash and its modification time."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(run_dir))] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime)
    return out


def ls_row(run_dir: Path, cwd: Path) -> str:
    done = run_cli("ls", run_dir.parent, "--all", cwd=cwd)
    (row,) = [line for line in done.stdout.splitlines() if line.startswith(run_dir.name)]
    return row


@pytest.fixture
def finished(workdir: Path) -> Path:
    """A run that completed 2 epochs (8 steps each), with its spec and checkpoints."""
    done = run_cli("run", write_spec(workdir, **TWO_EPOCHS), "--headless", cwd=workdir)
    assert done.returncode == 0, done.stderr
    return only_run(workdir / "runs")


@pytest.fixture(scope="module")
def untouched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished run for the tests that must not change it (refused resumes)."""
    folder = tmp_path_factory.mktemp("resume-refused")
    shutil.copy(FIXTURES / "tiny.py", folder / "tiny.py")
    done = run_cli("run", write_spec(folder, **TWO_EPOCHS), "--headless", cwd=folder)
    assert done.returncode == 0, done.stderr
    return only_run(folder / "runs")


def resume_in_process(capsys: pytest.CaptureFixture[str], run_dir: Path, *args: str) -> tuple[int, str]:
    """``tuiloop run --resume RUN_DIR --headless ARGS`` in this process (the CLI's own code path)."""
    from tuiloop.cli import main

    code = main(["run", "--resume", str(run_dir), "--headless", *args])
    return code, capsys.readouterr().err


# ---- a live run is not resumed -----------------------------------------------------------------------
def test_resume_of_a_live_run_refuses_and_leaves_it_alone(workdir: Path, cleanup: list[Path]) -> None:
    spec = write_spec(workdir, run={"epochs": 500}, model={"delay": 0.02})
    run_dir = start_detached(spec, cwd=workdir)
    cleanup.append(run_dir)
    wait_live(run_dir)
    spec_before = (run_dir / "spec.toml").read_bytes()
    info_before = read_json(run_dir / "run.json")
    for extra in (["--headless"], ["--detach"]):
        done = run_cli("run", "--resume", run_dir, *extra, cwd=workdir)
        assert done.returncode == 2, done.stderr
        assert (
            "the run is live" in done.stderr
            and f"tuiloop attach {run_dir}" in done.stderr
            and "Traceback" not in done.stderr
        )
    # untouched: its socket answers, its log grows, its spec and run.json are as they were
    assert answers(run_dir)
    step = last_step(run_dir)
    wait_until(lambda: last_step(run_dir) > step, 30, "the live run to go on")
    assert (run_dir / "spec.toml").read_bytes() == spec_before and read_json(run_dir / "run.json") == info_before
    assert not (run_dir / "summary.json").exists()
    assert sum(e["event"] == "run_started" for e in events(run_dir)) == 1
    kill_run(run_dir)


# ---- a resume that fails changes nothing ----------------------------------------------------------------
def _break_checkpoint_model(run_dir: Path, workdir: Path) -> None:
    """Put another model's weights in last.pt (a checkpoint copied from the wrong run)."""
    other = run_cli(
        "run",
        write_spec(workdir, "other.toml", run={"epochs": 1, "out_dir": str(workdir / "other")}, model={"hidden": 7}),
        "--headless",
        cwd=workdir,
    )
    assert other.returncode == 0, other.stderr
    shutil.copy(only_run(workdir / "other") / "checkpoints" / "last.pt", run_dir / "checkpoints" / "last.pt")


def _break_data_file(run_dir: Path, workdir: Path) -> None:
    (workdir / "tiny.py").write_text(
        (FIXTURES / "tiny.py").read_text() + "\nraise RuntimeError('tiny.py is half-edited')\n"
    )


BREAKAGES = {
    "no last.pt": (
        lambda run_dir, workdir: (run_dir / "checkpoints" / "last.pt").unlink(),
        ["there is no checkpoints/last.pt to resume from", "[checkpoint] last = true"],
    ),
    "another model's checkpoint": (
        _break_checkpoint_model,
        [
            "the checkpoint holds the weights of another model",
            "size mismatch",
            "Resume with the [model] the run was started with",
        ],
    ),
    "a spec that no longer builds": (
        _break_data_file,
        ["importing", "tiny.py", "RuntimeError: tiny.py is half-edited"],
    ),
    "a missing file target": (
        lambda run_dir, workdir: (workdir / "tiny.py").rename(workdir / "renamed.py"),
        ["[model] target", "no file", "tiny.py"],
    ),
}


@pytest.mark.parametrize(
    ("breakage", "how"),
    [(b, "--headless") for b in BREAKAGES]
    + [("another model's checkpoint", "--detach"), ("a missing file target", "--detach")],
)
def test_a_failed_resume_leaves_the_run_directory_as_it_was(
    finished: Path, workdir: Path, breakage: str, how: str
) -> None:
    """``--detach`` goes through the background worker, which reports back before anything changes."""
    breaker, said = BREAKAGES[breakage]
    breaker(finished, workdir)
    before, row_before = files_state(finished), ls_row(finished, workdir)
    done = run_cli("run", "--resume", finished, how, "--set", "run.epochs=4", cwd=workdir)
    assert done.returncode == 2, (done.stdout, done.stderr)
    for part in said:
        assert part in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "started" not in done.stdout
    assert files_state(finished) == before, "the run directory changed"
    assert read_json(finished / "summary.json")["status"] == "completed"  # type: ignore[index]
    assert ls_row(finished, workdir) == row_before


# ---- resume with edits ------------------------------------------------------------------------------------
def test_resume_with_new_settings_applies_and_records_them(finished: Path, workdir: Path) -> None:
    done = run_cli(
        "run",
        "--resume",
        finished,
        "--headless",
        "--set",
        "optimizer.lr=0.5",
        "--set",
        "run.epochs=3",
        "--set",
        "optimizer.weight_decay=0.01",
        cwd=workdir,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(
        r"learning rate 0\.01 -> 0\.5 \(resume with new settings, step 16, \d\d:\d\d:\d\d\)", done.stdout
    ), done.stdout
    assert "run.epochs: 3 -> 3" not in done.stdout and "run.epochs: 2 -> 3" in done.stdout
    log = events(finished)
    changed = {e["key"]: (e["old"], e["new"], e["step"]) for e in log if e["event"] == "setting_changed"}
    assert changed == {
        "optimizer.lr": (0.01, 0.5, 16),
        "optimizer.weight_decay": (None, 0.01, 16),
        "run.epochs": (2, 3, 16),
    }
    resumed_steps = [e for e in log if e["event"] == "train_steps" and e["first_step"] > 16]
    assert resumed_steps and all(e["lr"] == 0.5 for e in resumed_steps), (
        "the new learning rate trains from the resumed step on"
    )
    group = load_ckpt(finished / "checkpoints" / "last.pt")["optimizer_state_dict"]["param_groups"][0]
    assert (group["lr"], group["weight_decay"]) == (0.5, 0.01)
    assert read_json(finished / "summary.json")["epochs_done"] == 3  # type: ignore[index]


def test_a_changed_learning_rate_keeps_the_schedule(workdir: Path) -> None:
    """Cosine decay from 0.01 over 4 epochs, stopped after 2; resumed at lr 0.02: the schedule goes on, doubled."""
    sched = {"target": "CosineAnnealingLR", "T_max": 4}
    done = run_cli("run", write_spec(workdir, run={"epochs": 2}, scheduler=sched), "--headless", cwd=workdir)
    assert done.returncode == 0, done.stderr
    run_dir = only_run(workdir / "runs")
    resumed = run_cli(
        "run", "--resume", run_dir, "--headless", "--set", "optimizer.lr=0.02", "--set", "run.epochs=4", cwd=workdir
    )
    assert resumed.returncode == 0, resumed.stderr
    lrs = {e["epoch"]: e["lr"] for e in events(run_dir) if e["event"] == "train_steps"}
    cosine = lambda base, epoch: base * (1 + torch.cos(torch.tensor(torch.pi * epoch / 4)).item()) / 2  # noqa: E731
    assert (
        lrs[2] == pytest.approx(cosine(0.01, 1))
        and lrs[3] == pytest.approx(cosine(0.02, 2))
        and lrs[4] == pytest.approx(cosine(0.02, 3))
    )
    sched_state = load_ckpt(run_dir / "checkpoints" / "last.pt")["scheduler_state_dict"]
    assert sched_state["base_lrs"] == [pytest.approx(0.02)]


@pytest.mark.parametrize(
    ("item", "said"),
    [
        (
            "model.hidden=32",
            "[model] hidden (from --set model.hidden=32): it changed from 16 to 32, and it cannot change on resume: the checkpoint holds the weights",
        ),
        ("data.batch_size=8", "[data] batch_size (from --set data.batch_size=8): it changed from 16 to 8"),
        ("data.n=200", "[data] n (from --set data.n=200): it changed from unset to 200"),
        (
            "loss.target=NLLLoss",
            "[loss] target (from --set loss.target=NLLLoss): it changed from 'CrossEntropyLoss' to 'NLLLoss'",
        ),
        (
            "optimizer.target=SGD",
            "[optimizer] target (from --set optimizer.target=SGD): it changed from 'Adam' to 'SGD', and it cannot change on resume: the checkpoint's optimizer state",
        ),
        ("run.seed=1", "[run] seed (from --set run.seed=1): it changed from 0 to 1"),
        (
            "checkpoint.monitor=val_acc",
            "[checkpoint] monitor (from --set checkpoint.monitor=val_acc): it changed from unset to 'val_acc'",
        ),
    ],
)
def test_resume_refuses_edits_that_would_break_the_run(
    untouched: Path, capsys: pytest.CaptureFixture[str], item: str, said: str
) -> None:
    before = files_state(untouched)
    code, err = resume_in_process(capsys, untouched, "--set", item)
    assert code == 2, err
    assert said in err and "or start a new run" in err and "Traceback" not in err and err.count("\n") == 1
    assert files_state(untouched) == before


def test_resume_with_persistent_workers_warns_that_it_is_not_exact(workdir: Path) -> None:
    data = {"target": "tiny.py:noisy_classes", "num_workers": 2, "persistent_workers": True}
    done = run_cli("run", write_spec(workdir, run={"epochs": 1}, data=data), "--headless", cwd=workdir)
    assert done.returncode == 0, done.stderr
    resumed = run_cli("run", "--resume", only_run(workdir / "runs"), "--headless", "--set", "run.epochs=2", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    assert (
        "warning: this resume is not exact: persistent DataLoader workers restart with new random streams"
        in resumed.stdout
    )
