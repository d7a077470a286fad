"""What the two-process tests of the framework callbacks (Hugging Face, Lightning) share: one
torchrun launch of a fixture script, steered through the main process's control socket as an
attached monitor steers it, and the checks that hold for any framework's run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import cli_env, run_cli
from markers import starts_processes
from runs_support import answers, events, last_step, process_gone, summary, wait_until

from tuiloop.rundir.control import send_command
from tuiloop.rundir.lock import is_locked

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def of(evs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in evs if e["event"] == kind]


def only_run(runs: Path) -> Path | None:
    found = list(runs.iterdir()) if runs.is_dir() else []
    assert len(found) <= 1, f"one run directory for the two processes, not {found}"
    return found[0] if found else None


@starts_processes
def launch(tmp_path: Path, script: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``script - OUT ARGS`` on two processes under torchrun, in a session of its own; each rank
    writes what it saw into ``tmp_path/out/rank-N.json``."""
    return subprocess.Popen(
        [*TORCHRUN, script, "-", tmp_path / "out", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env or cli_env(),
        start_new_session=True,
    )


def training(tmp_path: Path) -> Path:
    """The main process's run directory, once both ranks train and its socket answers."""
    run_dir = wait_until(lambda: only_run(tmp_path / "runs"), 120, "the main process's run directory")
    wait_until(lambda: answers(run_dir) and last_step(run_dir) >= 4, 120, "the ranks to train")
    return run_dir


def ended(proc: subprocess.Popen) -> str:
    """Its output once it has ended by itself (a test that fails first calls :func:`kill`)."""
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output[-4000:]
    return output


def kill(proc: subprocess.Popen) -> None:
    """A failed test: torchrun and its workers, all in their own session, go."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def steer_both_ranks(proc: subprocess.Popen, tmp_path: Path, timeout_s: float) -> tuple[Path, dict[str, Any]]:
    """Pause for longer than the process group's timeout, resume, save, halve the learning rate,
    stop; returns the run directory and the learning rate's setting_changed event."""
    try:
        run_dir = training(tmp_path)
        assert send_command(run_dir, "pause") == {"ok": True}
        wait_until(lambda: of(events(run_dir), "state"), 20, "the pause")
        held = last_step(run_dir)
        time.sleep(timeout_s + 2)  # the ranks stay in step, and no collective waits out the timeout
        assert last_step(run_dir) == held and proc.poll() is None
        assert send_command(run_dir, "resume") == {"ok": True}
        wait_until(lambda: last_step(run_dir) > held, 30, "steps after the resume")
        assert send_command(run_dir, "save") == {"ok": True}
        wait_until(lambda: [c for c in of(events(run_dir), "checkpoint") if c["tag"] == "manual"], 30, "the save")
        assert send_command(run_dir, "lr_down") == {"ok": True}
        change = wait_until(lambda: of(events(run_dir), "setting_changed"), 30, "the learning rate change")[0]
        wait_until(lambda: last_step(run_dir) >= change["step"] + 4, 30, "steps at the new rate")
        assert send_command(run_dir, "stop") == {"ok": True}
    except BaseException:
        kill(proc)
        raise
    ended(proc)
    return run_dir, change


def ranks_seen(tmp_path: Path) -> list[dict[str, Any]]:
    """What each rank recorded; no rank is left running."""
    seen = [json.loads((tmp_path / "out" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(process_gone(s["pid"]) for s in seen), "no rank is left behind"
    return seen


def check_stopped_together(
    tmp_path: Path, run_dir: Path, timeout_s: float, steps_per_epoch: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """The checks any framework's steered two-process run passes; returns its events, what each
    rank saw and the summary."""
    seen = ranks_seen(tmp_path)
    assert not is_locked(run_dir) and not (run_dir / "control.sock").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "runs"], "the other rank wrote nothing"
    evs = events(run_dir)
    (started,) = of(evs, "run_started")
    assert (started["world_size"], started["backend"], started["steps_per_epoch"]) == (2, "gloo", steps_per_epoch)
    assert len(started["nodes"]) == 1
    s = summary(run_dir)
    assert s is not None and (s["status"], s["reason"]) == ("stopped", "stopped by request")
    assert seen[0]["lrs"] == seen[1]["lrs"], "the learning rate changed at the same step on both ranks"
    manual = [c for c in of(evs, "checkpoint") if c["tag"] == "manual"][0]
    assert manual["step"] in seen[0]["saves"] and seen[0]["saves"] == seen[1]["saves"]
    paused, resumed = of(evs, "state")[:2]
    assert (paused["state"], resumed["state"]) == ("paused", "running")
    for rank in seen:  # each rank held still for the whole pause, longer than the process group's timeout
        gaps = [b - a for a, b in zip(rank["ended"], rank["ended"][1:], strict=False)]
        assert max(gaps) > timeout_s + 1, gaps
    shown = run_cli("show", run_dir, cwd=tmp_path)
    assert shown.returncode == 0 and "finished: stopped (stopped by request)" in shown.stdout, shown.stdout[-2000:]
    listed = run_cli("ls", tmp_path / "runs", cwd=tmp_path)
    assert run_dir.name in listed.stdout and "stopped" in listed.stdout, listed.stdout
    return evs, seen, s
