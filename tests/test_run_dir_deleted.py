"""A run directory deleted while its run is live: the run notices, writes nothing more (before,
its next checkpoint created the directory again, 0755, without its log, and it trained on), and
ends at once with a message that says what happened."""

from __future__ import annotations

import shutil
from pathlib import Path

import psutil
from conftest import start_cli, write_spec
from runs_support import start_detached, wait_until

from tuiloop.rundir.layout import CHECKPOINTS


def test_a_run_whose_directory_is_deleted_ends_without_creating_it_again(workdir: Path) -> None:
    spec = write_spec(workdir, run={"epochs": 200, "log_interval": 0.02}, model={"delay": 0.01})
    proc = start_cli("run", spec, "--headless", cwd=workdir)
    try:
        last = wait_until(lambda: next((workdir / "runs").glob(f"*/{CHECKPOINTS}/last.pt"), None), 60, "epoch 1")
        run_dir = last.parent.parent
        shutil.rmtree(run_dir)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert f"{run_dir} was deleted while the run was live" in err and "writing nothing more" in err, err
    assert not run_dir.exists()

    detached = start_detached(spec, cwd=workdir)  # the training process and its watcher
    wait_until(lambda: (detached / CHECKPOINTS / "last.pt").exists(), 60, "epoch 1 of the detached run")
    shutil.rmtree(detached)
    wait_until(lambda: not processes_of(detached), 30, "the training process and its watcher to end")
    assert not detached.exists()


def processes_of(run_dir: Path) -> list[psutil.Process]:
    """``tuiloop _train RUN_DIR`` processes still running."""
    left = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if str(run_dir) in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
            left.append(p)
    return left
