"""``attach`` and ``show`` when there is nothing live to attach to: clear words, no hanging."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, only_run, run_cli, write_spec
from runs_support import kill_run, start_detached, wait_live, wait_until

from tuiloop.rundir.eventlog import read_events
from tuiloop.rundir.layout import read_json
from tuiloop.rundir.lock import is_locked
from tuiloop.tui.model import MonitorModel


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("attach-errors")
    shutil.copy(FIXTURES / "tiny.py", folder / "tiny.py")
    return folder


@pytest.fixture(scope="module")
def finished(workdir: Path) -> Path:
    spec = write_spec(workdir, "done.toml", run={"epochs": 2, "out_dir": str(workdir / "done")})
    assert run_cli("run", spec, "--headless", cwd=workdir).returncode == 0
    return only_run(workdir / "done")


@pytest.fixture(scope="module")
def crashed(workdir: Path) -> Iterator[Path]:
    """A run killed with SIGKILL mid-training: no summary, a stale control socket."""
    spec = write_spec(
        workdir, "slow.toml", run={"epochs": 500, "out_dir": str(workdir / "crashed")}, model={"delay": 0.05}
    )
    run_dir = start_detached(spec, cwd=workdir)
    try:
        wait_live(run_dir)
        wait_until(lambda: b'"event":"validated"' in (run_dir / "events.jsonl").read_bytes(), 60, "an epoch")
        pid = read_json(run_dir / "run.json")["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not is_locked(run_dir), 10, "the process to die")
        yield run_dir
    finally:
        kill_run(run_dir)


def test_attach_to_a_finished_run_says_so_and_points_to_show(finished: Path, workdir: Path) -> None:
    done = run_cli("attach", finished, cwd=workdir)
    assert done.returncode == 1
    assert f"{finished} is not live: it ended (finished: " in done.stderr
    assert f"tuiloop show {finished}" in done.stderr


def test_attach_to_a_killed_run_reports_the_stale_socket_without_hanging(crashed: Path, workdir: Path) -> None:
    assert (crashed / "control.sock").exists()  # left behind by the killed process
    t0 = time.monotonic()
    done = run_cli("attach", crashed, cwd=workdir, timeout=30)
    assert time.monotonic() - t0 < 15
    assert done.returncode == 1
    assert "is not live" in done.stderr and "stale control socket" in done.stderr
    assert f"tuiloop show {crashed}" in done.stderr


def test_attach_without_a_live_run(crashed: Path, finished: Path, workdir: Path) -> None:
    """No argument: the newest live run under ./runs; the only runs there are dead ones."""
    runs = workdir / "runs"
    runs.mkdir(exist_ok=True)
    for run_dir in (crashed, finished):
        target = runs / run_dir.name
        if not target.exists():
            target.symlink_to(run_dir)
    done = run_cli("attach", cwd=workdir)
    assert done.returncode == 1
    assert "no live run under runs/" in done.stderr and "tuiloop ls" in done.stderr
    # `ls` agrees.
    listed = run_cli("ls", cwd=workdir)
    states = sorted(line.split()[1] for line in listed.stdout.splitlines()[1:])
    assert states == ["crashed", "finished"]


def test_an_unknown_ambiguous_or_non_run_name_exits_2_saying_which(
    workdir: Path, finished: Path, crashed: Path
) -> None:
    runs = workdir / "runs"
    runs.mkdir(exist_ok=True)
    for run_dir in (crashed, finished):
        if not (runs / run_dir.name).exists():
            (runs / run_dir.name).symlink_to(run_dir)
    missing = run_cli("attach", "no-such-run", cwd=workdir)
    assert missing.returncode == 2 and "no run directory 'no-such-run'" in missing.stderr
    ambiguous = run_cli("show", "tiny-", cwd=workdir)
    assert ambiguous.returncode == 2 and "matches 2 runs" in ambiguous.stderr
    not_a_run = run_cli("show", workdir, cwd=workdir)
    assert not_a_run.returncode == 2 and "not a tuiloop run directory" in not_a_run.stderr


def test_show_without_a_terminal_prints_the_log(finished: Path, crashed: Path, workdir: Path) -> None:
    shown = run_cli("show", finished, cwd=workdir)
    assert shown.returncode == 0, shown.stderr
    assert "epoch 2/2" in shown.stdout and "finished: completed" in shown.stdout
    shown = run_cli("show", crashed, cwd=workdir)
    assert shown.returncode == 0, shown.stderr
    assert "epoch 1/500" in shown.stdout
    assert shown.stdout.rstrip().splitlines()[-1].startswith("crashed: its process")


def test_show_through_a_pipe_prints_every_save_the_monitors_log_shows(finished: Path, workdir: Path) -> None:
    """``tuiloop show RUN | cat``: the saves, last.pt among them, as the monitor's log words them."""
    shown = run_cli("show", finished, cwd=workdir)  # stdout is a pipe: the plain lines
    assert shown.returncode == 0, shown.stderr
    events, _ = read_events(finished)
    model = MonitorModel(str(finished))
    model.apply_all(events)
    logged = [entry.text for entry in model.log if entry.text.startswith("saved ")]
    printed = [line for line in shown.stdout.splitlines() if line.startswith("saved ")]
    assert len(printed) == 2 and printed == logged, (printed, logged)  # one line per epoch of the 2
    assert all("last.pt" in line for line in printed), printed
    assert any(line.startswith("saved last checkpoints/last.pt") or line.endswith("+ last.pt") for line in printed)


def test_show_piped_into_a_reader_that_stops_early_exits_quietly(finished: Path, workdir: Path) -> None:
    """``tuiloop show RUN | head -1``: no BrokenPipeError traceback when head has had enough."""
    import shlex
    import subprocess
    import sys

    from conftest import cli_env

    cmd = f"{shlex.quote(sys.executable)} -m tuiloop show {shlex.quote(str(finished))} | head -1"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], cwd=workdir, capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert done.stdout.startswith("run tiny started") and done.stdout.count("\n") == 1
    assert done.stderr == "", done.stderr
    assert done.returncode == 0


def test_show_skips_lines_it_cannot_read_and_says_so(finished: Path, tmp_path: Path) -> None:
    """A line from a newer tuiloop, a line missing a field, a torn line: skipped with a warning."""
    copy = tmp_path / finished.name
    shutil.copytree(finished, copy)
    lines = (copy / "events.jsonl").read_text().splitlines()
    odd = [
        '{"event":"gpu_sample","time":1.0,"util":[99]}',
        '{"event":"validated","time":1.0}',
        "[1, 2]",
        '{"event":"train_ste',
    ]
    (copy / "events.jsonl").write_text("\n".join(lines[:2] + odd + lines[2:]) + "\n")
    shown = run_cli("show", copy, cwd=tmp_path)
    assert shown.returncode == 0
    assert "finished: completed" in shown.stdout
    assert (
        shown.stderr.startswith("tuiloop: warning: skipped 4 line(s)")
        and "line 3: unknown event type 'gpu_sample'" in shown.stderr
    )
    assert "line 4: 'validated' event without epoch, step, metrics, is_best, duration_s" in shown.stderr
