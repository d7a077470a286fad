"""``tuiloop run SCRIPT.py ARGS``: a script of the user's own as the training process. It gets its
arguments, writes into the run directory tuiloop chose (``tuiloop.track()`` without a run_dir),
and leaves with its own exit status; one that ends before its tracked run finished is recorded
as failed, and one that never opens its run directory still has an ending that says so."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, only_run, run_cli
from runs_support import TUILOOP, Tmux, events, kill_run, new_run_dir, summary, wait_live, wait_until

from tuiloop.cli.main import _parser, main
from tuiloop.cli.script_args import split_script
from tuiloop.engine.exits import EXIT_USAGE
from tuiloop.rundir.layout import read_json
from tuiloop.rundir.state import run_state

SCRIPT = FIXTURES / "tracked_loop.py"
needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


@pytest.mark.parametrize(
    ("argv", "ours", "theirs"),
    [
        (["run", "train.py", "--lr", "0.1", "--headless"], ["run", "train.py"], ["--lr", "0.1", "--headless"]),
        (
            ["run", "--name", "a.py", "--nproc-per-node", "2", "--detach", "t.py", "x"],
            ["run", "--name", "a.py", "--nproc-per-node", "2", "--detach", "t.py"],
            ["x"],
        ),
        (["run", "--out-dir=o", "t.py", "--", "-v"], ["run", "--out-dir=o", "t.py"], ["--", "-v"]),
        (["run", "spec.toml", "--set", "a.b=1"], ["run", "spec.toml", "--set", "a.b=1"], []),
        (["run", "--resume", "runs/x"], ["run", "--resume", "runs/x"], []),
    ],
)
def test_everything_after_the_script_is_the_scripts(argv: list[str], ours: list[str], theirs: list[str]) -> None:
    assert split_script(argv, _parser()) == (ours, theirs)


@pytest.mark.parametrize("option", [["--set", "run.epochs=2"], ["--resume", "runs/x"], ["--nnodes", "2"]])
def test_a_specs_options_are_refused_for_a_script(option: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", *option, str(SCRIPT)]) == EXIT_USAGE
    assert "is for a spec, not a script" in capsys.readouterr().err


def test_a_scripts_options_are_refused_for_a_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--name", "x", str(tmp_path / "spec.toml")]) == EXIT_USAGE
    assert "--set run.name=" in capsys.readouterr().err


def test_headless_script_gets_its_arguments_and_tracks_into_the_run_dir_tuiloop_chose(tmp_path: Path) -> None:
    done = run_cli("run", "--headless", "--name", "lr-test", SCRIPT, "--lr", "0.1", "--epochs", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_dir = only_run(tmp_path / "runs")
    assert re.fullmatch(r"lr-test-\d{8}-\d{6}-[0-9a-f]{4}", run_dir.name)
    assert "argv ['--lr', '0.1', '--epochs', '2']" in done.stdout
    assert f"run_dir {run_dir}" in done.stdout  # track() without a run_dir used it
    info = read_json(run_dir / "run.json") or {}
    assert info["name"] == "lr-test" and info["script"] == str(SCRIPT)
    assert info["script_args"] == ["--lr", "0.1", "--epochs", "2"]
    assert info["config"]["lr"] == 0.1
    assert (summary(run_dir) or {})["status"] == "completed"
    assert [e["epoch"] for e in events(run_dir) if e["event"] == "validated"] == [1, 2]


def test_detached_script_runs_in_the_background_with_its_output_in_output_log(tmp_path: Path) -> None:
    done = run_cli("run", "--detach", "--out-dir", "elsewhere", SCRIPT, "--step-s", "0.05", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    m = re.search(r"^started (\S+) \(pid \d+\)", done.stdout, re.M)
    assert m, done.stdout
    run_dir = Path(m.group(1))
    assert run_dir.parent == tmp_path / "elsewhere" and run_dir.name.startswith("tracked_loop-")
    wait_until(lambda: summary(run_dir), 60, "the detached script to finish")
    assert summary(run_dir)["status"] == "completed"  # type: ignore[index]
    assert "argv ['--step-s', '0.05']" in (run_dir / "output.log").read_text()


def test_a_script_that_exits_before_its_run_finished_is_failed_with_its_status(tmp_path: Path) -> None:
    done = run_cli("run", "--headless", SCRIPT, "--exit-at", "3", cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    run_dir = only_run(tmp_path / "runs")
    assert (summary(run_dir) or {})["status"] == "failed"
    assert "exited with status 3 without finishing" in done.stderr
    assert run_state(run_dir).state == "failed"


def test_a_script_that_never_opens_its_run_directory_still_ends_there(tmp_path: Path) -> None:
    done = run_cli("run", "--detach", SCRIPT, "--untracked", "0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_dir = only_run(tmp_path / "runs")
    wait_until(lambda: summary(run_dir), 60, "the script to end")
    s = summary(run_dir) or {}
    assert s["status"] == "completed" and s["tracked"] is False
    assert "the script logs nothing to tuiloop" in s["reason"]
    assert "training without tuiloop" in (run_dir / "output.log").read_text()


@needs_tmux
def test_a_monitored_script_survives_its_terminal(tmp_path: Path, tmux: Tmux) -> None:
    """`tuiloop run SCRIPT.py` with the live monitor in a tmux pane that is killed mid-run."""
    session = tmux.new("script", f"{TUILOOP} run {SCRIPT} --epochs 6 --steps 10 --step-s 0.05")
    run_dir = new_run_dir(tmp_path / "runs", set())
    try:
        wait_live(run_dir)
        tmux.wait_for(session, run_dir.name[:8])  # the monitor is up and drawing
        wait_until(lambda: any(e["event"] == "validated" for e in events(run_dir)), 60, "the first epoch")
        assert summary(run_dir) is None, "the run ended before the terminal could be killed"
        tmux.kill_session(session)
        wait_until(lambda: summary(run_dir), 60, "the script whose terminal died to finish")
    finally:
        kill_run(run_dir)
    assert (summary(run_dir) or {})["status"] == "completed"
    assert [e["epoch"] for e in events(run_dir) if e["event"] == "validated"] == [1, 2, 3, 4, 5, 6]
    assert "Traceback" not in (run_dir / "output.log").read_text()
