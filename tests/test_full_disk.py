"""A full disk and a read-only run directory, met on a real file system: a small tmpfs mounted as
``out_dir``, filled by the run's own checkpoints or by another writer, made read-only, then grown.

A failed write is named as what it is, where it happened and what is safe; no temp file is left;
a resume on a full or read-only disk changes no file; once space is freed, ``--resume`` goes on.
Mounting needs root (CI runs as root); ``chmod`` would not do: root writes through it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, load_ckpt, only_run, run_cli, write_spec
from disk_user import fill
from runs_support import events, summary

from tuiloop.engine.events import CheckpointSaved
from tuiloop.rundir.filesystem import unwritable
from tuiloop.tui.model import MonitorModel

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``tmpfs("1m")``: a fresh tmpfs of that size, unmounted at teardown."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


def temps(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]


def files(run_dir: Path) -> dict[str, tuple[str, int]]:
    """Every file of the run directory: its SHA-256 and its mtime."""
    return {
        str(p.relative_to(run_dir)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def one_error_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stdout
    return lines[0]


@needs_root
def test_checkpoints_that_fill_the_disk_end_the_run_saying_what_is_safe_and_a_resume_goes_on_once_there_is_space(
    workdir: Path, tmpfs: Callable[[str], Path]
) -> None:
    disk = tmpfs("1m")  # a checkpoint is about 210 kB: every epoch adds one, so it fills within a few
    spec = write_spec(
        workdir, run={"out_dir": str(disk), "epochs": 5}, model={"hidden": 2000}, checkpoint={"every_n_epochs": 1}
    )
    done = run_cli("run", spec, "--headless", cwd=workdir)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr == "" and "Traceback" not in done.stdout
    run_dir = only_run(disk)
    good = [e["epoch"] for e in events(run_dir) if e["event"] == "checkpoint" and e["tag"] == "last"][-1]
    m = re.fullmatch(
        rf"error: no space left on device writing (checkpoints/[\w.-]+\.pt) at epoch {good + 1}; the last good "
        rf"checkpoint is epoch {good} \(last\.pt\): free some space, then resume from it  \[saving checkpoints\]",
        one_error_line(done.stdout),
    )
    assert m, done.stdout
    assert f"finished: failed (no space left on device writing {m[1]}) after {good + 1} epochs" in done.stdout
    log = [e["event"] for e in events(run_dir)]
    assert log.count("failed") == 1 and log.count("finished") == 1 and log[-1] == "finished", log[-4:]
    s = summary(run_dir)
    assert s is not None and (s["status"], s["reason"]) == ("failed", f"no space left on device writing {m[1]}"), s
    assert temps(run_dir) == []
    assert load_ckpt(run_dir / "checkpoints" / "last.pt")["epoch"] == good
    assert re.search(rf"^{run_dir.name}\s+failed\s", run_cli("ls", disk, cwd=workdir).stdout, re.M)
    assert m[0].removeprefix("error: ") in run_cli("show", run_dir, cwd=workdir).stdout

    # A resume on the full disk, then on the disk made read-only: refused, every file as it was.
    fill(str(disk / "filler"))
    before = files(run_dir)
    done = run_cli("run", "--resume", run_dir, "--headless", cwd=workdir)
    assert done.returncode == 2 and done.stderr == (
        f"tuiloop: error: --resume {run_dir}: no space left on device writing spec.toml; nothing in the run "
        f"directory was changed. Free some space there, then resume again: tuiloop run --resume {run_dir}.\n"
    )
    (disk / "filler").unlink()
    remount(disk, "ro")
    done = run_cli("run", "--resume", run_dir, "--headless", cwd=workdir)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith(f"tuiloop: error: --resume {run_dir}: the file system is read-only writing ")
    assert "nothing in the run directory was changed. Make it writable for this user" in done.stderr
    assert files(run_dir) == before

    remount(disk, "rw,size=16m")
    done = run_cli("run", "--resume", run_dir, "--headless", cwd=workdir)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert f"resumed at epoch {good + 1}" in done.stdout
    s = summary(run_dir)
    assert s is not None and (s["status"], s["epochs_done"]) == ("completed", 5), s
    assert temps(run_dir) == []


@needs_root
def test_a_disk_filled_by_another_writer_so_the_log_fails_is_told_once_on_the_terminal_and_resumes(
    workdir: Path, tmpfs: Callable[[str], Path]
) -> None:
    """The event log itself cannot be written: the terminal still gets the failure, once."""
    disk = tmpfs("2m")
    shutil.copy(FIXTURES / "disk_user.py", workdir)
    armed = workdir / "armed"
    armed.touch()
    spec = write_spec(
        workdir,
        run={"out_dir": str(disk), "epochs": 2, "log_interval": 0.001},
        # 250 steps an epoch; the disk fills 50 steps into epoch 2, after epoch 1's checkpoints
        model={"target": "disk_user.py:Filling", "path": str(disk / "filler"), "armed": str(armed), "at": 300},
        data={"n": 2040, "batch_size": 8},
    )
    done = run_cli("run", spec, "--headless", cwd=workdir)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr == "" and "Traceback" not in done.stdout
    assert re.fullmatch(
        r"error: no space left on device writing events\.jsonl at step \d+ \(epoch 2\); the last good checkpoint "
        r"is epoch 1 \(last\.pt\): free some space, then resume from it  \[training\]",
        one_error_line(done.stdout),
    ), done.stdout
    assert done.stdout.count("finished: failed (no space left on device writing events.jsonl)") == 1
    assert "setup error" not in done.stdout
    run_dir = only_run(disk)
    assert temps(run_dir) == [] and summary(run_dir) is None  # no room for it: ls says crashed
    assert re.search(rf"^{run_dir.name}\s+crashed\s", run_cli("ls", disk, cwd=workdir).stdout, re.M)
    assert unwritable(run_dir) == "its file system is full"

    (disk / "filler").unlink()
    assert unwritable(run_dir) == ""
    done = run_cli("run", "--resume", run_dir, "--headless", cwd=workdir)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "resumed at epoch 2" in done.stdout
    s = summary(run_dir)
    assert s is not None and (s["status"], s["epochs_done"]) == ("completed", 2), s


@needs_root
def test_a_read_only_or_full_out_dir_is_one_paragraph_at_the_start_and_leaves_nothing(
    workdir: Path, tmpfs: Callable[[str], Path]
) -> None:
    shutil.copy(FIXTURES / "disk_user.py", workdir)
    marker = workdir / "data-loaded"
    data = {"target": "disk_user.py:marked_classes", "marker": str(marker)}
    read_only = tmpfs("1m")
    remount(read_only, "ro")
    spec = write_spec(workdir, run={"out_dir": str(read_only / "runs")}, data=data)
    for how in ("--headless", "--detach"):
        done = run_cli("run", spec, how, cwd=workdir)
        assert done.returncode == 2, (how, done.stdout, done.stderr)
        assert done.stderr == (
            f"tuiloop: error: {spec}, [run] out_dir: the file system is read-only: a run directory cannot be made in "
            f"{read_only / 'runs'} ({read_only}). Make it writable for this user, then run again, or put runs "
            "elsewhere with --set run.out_dir=PATH.\n"
        )
    assert not marker.exists(), "the data was loaded before the out_dir was checked"

    full = tmpfs("1m")
    fill(str(full / "filler"))
    spec = write_spec(workdir, run={"out_dir": str(full)}, data=data)
    done = run_cli("run", spec, "--headless", cwd=workdir)
    assert (
        done.returncode == 2
        and f"[run] out_dir: no space left on device: a run directory cannot be made in {full}" in done.stderr
    )
    assert not marker.exists()
    assert [p.name for p in full.iterdir()] == ["filler"]

    # One page left: the check passes, spec.toml takes it, run.json finds none. Nothing half-made stays.
    (full / "filler").unlink()
    (full / "page").write_bytes(b"\0" * 4096)
    fill(str(full / "filler"))
    (full / "page").unlink()
    done = run_cli("run", spec, "--headless", cwd=workdir)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "[run] out_dir: no space left on device" in done.stderr, done.stderr
    assert marker.exists(), "the check found space: the run was built"
    assert [p.name for p in full.iterdir()] == ["filler"]


def test_a_monitor_whose_training_process_died_on_a_full_disk_says_so_and_what_is_safe() -> None:
    """The training process could write neither its log nor its output.log: the monitor asks the
    file system (tuiloop.rundir.filesystem, tried on a real tmpfs above) and says what is safe."""
    model = MonitorModel("runs/r")
    model.apply_all([CheckpointSaved("last", "checkpoints/last.pt", 3, 24, None, None)])
    model.process_gone(1, 0.0, "its file system is full")
    assert model.state == "crashed"
    assert model.state_reason == (
        "the training process exited with status 1 without finishing: the run directory cannot be written "
        "(its file system is full); the last good checkpoint is epoch 3 (checkpoints/last.pt)"
    )
    assert model.summary_line().endswith(model.state_reason)
