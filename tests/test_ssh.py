"""Runs outlive their terminal: the terminal (a real tmux pane) dies mid-run, as when an SSH
connection drops, and the run finishes with the same results as one left alone. Also: only the
run's owner can command it."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, assert_same_weights, load_ckpt, only_run, run_cli, write_spec
from runs_support import (
    TUILOOP,
    Tmux,
    children,
    ended,
    events,
    kill_run,
    new_run_dir,
    process_gone,
    start_detached,
    summary,
    wait_live,
    wait_until,
)

from tuiloop.rundir.control import ControlError, send_command
from tuiloop.rundir.layout import read_json
from tuiloop.rundir.lock import is_locked
from tuiloop.rundir.state import run_state

RUNUSER = shutil.which("runuser") or "runuser"
needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")

# 8 steps of 40 ms per epoch, 8 epochs: about 3 s of training, time enough to kill a terminal
# mid-run. The delay only sleeps; it does not change the arithmetic.
SURVIVOR = dict(
    run={"epochs": 8},
    model={"delay": 0.04, "dropout": 0.2},
    scheduler={"target": "StepLR", "step_size": 2, "gamma": 0.7},
)


def reference_run(workdir: Path, spec: Path) -> Path:
    """The same spec, run headless with nobody touching it."""
    done = run_cli("run", spec, "--headless", "--set", f"run.out_dir={workdir / 'ref'}", cwd=workdir)
    assert done.returncode == 0, done.stderr
    return only_run(workdir / "ref")


def assert_same_results(run_dir: Path, ref_dir: Path) -> None:
    """Same summary, same final and best weights, same validation history as the reference."""
    got, want = summary(run_dir), summary(ref_dir)
    assert got is not None and want is not None
    for key in ("status", "epochs_done", "steps", "best_value", "best_epoch", "final_metrics"):
        assert got[key] == want[key], key
    for name in ("last.pt", "best.pt"):
        a, b = load_ckpt(run_dir / "checkpoints" / name), load_ckpt(ref_dir / "checkpoints" / name)
        assert_same_weights(a["model_state_dict"], b["model_state_dict"])
        assert a["epoch"] == b["epoch"]
    validated = lambda d: [(e["epoch"], e["metrics"]) for e in events(d) if e["event"] == "validated"]  # noqa: E731
    assert validated(run_dir) == validated(ref_dir)


def kill_terminal_mid_run(tmux: Tmux, session: str, run_dir: Path) -> int:
    """Wait for an epoch to be done, then kill the terminal; returns the step reached by then."""
    wait_until(lambda: any(e["event"] == "validated" for e in events(run_dir)), 60, "the first epoch")
    assert summary(run_dir) is None, "the run ended before the terminal could be killed"
    step = max(e["step"] for e in events(run_dir) if e["event"] == "validated")
    tmux.kill_session(session)
    return step


@needs_tmux
def test_headless_run_survives_its_terminal(workdir: Path, tmux: Tmux, cleanup: list[Path]) -> None:
    """`tuiloop run --headless` in a pane that is killed: SIGHUP is ignored, output goes quiet."""
    spec = write_spec(workdir, **SURVIVOR)
    out_dir = workdir / "runs"
    session = tmux.new("headless", f"{TUILOOP} run {spec} --headless")
    run_dir = new_run_dir(out_dir, set())
    cleanup.append(run_dir)
    wait_live(run_dir)
    tmux.wait_for(session, r"epoch 1/8 ")  # it printed into the terminal
    killed_at = kill_terminal_mid_run(tmux, session, run_dir)

    # The process that printed to the dead terminal trains on to the end.
    wait_until(lambda: ended(run_dir), 90, "the run whose terminal died to finish and close")
    assert summary(run_dir)["status"] == "completed"
    assert max(e["step"] for e in events(run_dir) if e["event"] == "validated") > killed_at
    assert not (run_dir / "control.sock").exists()
    assert run_state(run_dir).state == "finished"
    assert_same_results(run_dir, reference_run(workdir, spec))


@needs_tmux
def test_monitored_run_survives_its_terminal(workdir: Path, tmux: Tmux, cleanup: list[Path]) -> None:
    """`tuiloop run SPEC` with the live monitor; the terminal dies (SIGHUP) mid-run."""
    spec = write_spec(workdir, **SURVIVOR)
    session = tmux.new("monitor", f"{TUILOOP} run {spec}")
    run_dir = new_run_dir(workdir / "runs", set())
    cleanup.append(run_dir)
    wait_live(run_dir)
    tmux.wait_for(session, run_dir.name[:4])  # the monitor is up and drawing
    shell = tmux.pane_pid(session)
    monitor = children(shell)
    assert len(monitor) == 1
    killed_at = kill_terminal_mid_run(tmux, session, run_dir)
    # The view goes with its terminal (it does not linger writing to nowhere); the run does not.
    wait_until(lambda: process_gone(monitor[0]), 10, "the monitor to end with its terminal")

    wait_until(lambda: summary(run_dir), 90, "the summary of the run whose monitor died")
    assert summary(run_dir)["status"] == "completed"
    assert max(e["step"] for e in events(run_dir) if e["event"] == "validated") > killed_at
    assert "Traceback" not in (run_dir / "output.log").read_text()
    assert_same_results(run_dir, reference_run(workdir, spec))


@needs_tmux
def test_detached_run_is_unaffected_by_the_terminal_that_started_it(
    workdir: Path, tmux: Tmux, cleanup: list[Path]
) -> None:
    """`tuiloop run --detach` typed into a terminal that then dies: the run does not notice."""
    spec = write_spec(workdir, **SURVIVOR)
    session = tmux.new("detach", f"{TUILOOP} run --detach {spec}")
    screen = tmux.wait_for(session, r"\[exit 0\]")
    assert "tuiloop attach" in screen
    run_dir = only_run(workdir / "runs")
    cleanup.append(run_dir)
    wait_live(run_dir)
    tmux.kill_session(session)
    wait_until(lambda: summary(run_dir), 90, "the detached run's summary")
    assert summary(run_dir)["status"] == "completed"
    assert_same_results(run_dir, reference_run(workdir, spec))


# ---- only the owner may command a run ----------------------------------------------------------
def _other_user() -> Iterator[str]:
    """A user that is not us: ``nobody``, or one made for the test (root only)."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root (and runuser) to act as another user")
    try:
        pwd.getpwnam("nobody")
        yield "nobody"
        return
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        pytest.skip("no user 'nobody' and no useradd to make one")
    name = "tuiloop-test-other"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def other_user() -> Iterator[str]:
    yield from _other_user()


def _user_env() -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": "/", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture
def user_python(other_user: str) -> str:
    """A Python interpreter the other user may run (ours may live in root's home), with tuiloop on its path."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        ok = subprocess.run(
            [RUNUSER, "-u", other_user, "--", candidate, "-c", "import tuiloop.rundir.control"],
            capture_output=True,
            env=_user_env(),
        )
        if ok.returncode == 0:
            return candidate
    pytest.skip(f"no Python that user {other_user} can run with tuiloop importable")


def as_user(user: str, python: str, run_dir: Path, cmd: str) -> subprocess.CompletedProcess:
    """``send_command(run_dir, cmd)`` in a process of ``user``; prints the reply or the error."""
    code = "import sys\nfrom tuiloop.rundir.control import send_command, ControlError\ntry:\n    print('REPLY', send_command(sys.argv[1], sys.argv[2]))\nexcept ControlError as e:\n    print('REFUSED', e)\n"
    return subprocess.run(
        [RUNUSER, "-u", user, "--", python, "-c", code, str(run_dir), cmd],
        capture_output=True,
        text=True,
        timeout=60,
        env=_user_env(),
    )


def test_only_the_owner_can_command_a_run(other_user: str, user_python: str, cleanup: list[Path]) -> None:
    # The runs directory is world-traversable, as a shared /scratch or a home directory often is.
    top = Path(tempfile.mkdtemp(prefix="tuiloop-owner-"))
    try:
        os.chmod(top, 0o755)
        shutil.copy(Path(__file__).parent / "fixtures" / "tiny.py", top / "tiny.py")
        spec = write_spec(top, run={"epochs": 500}, model={"delay": 0.05})
        run_dir = start_detached(spec, cwd=top)
        cleanup.append(run_dir)
        wait_live(run_dir)
        assert run_dir.stat().st_mode & 0o777 == 0o700
        assert (run_dir / "control.sock").stat().st_mode & 0o777 == 0o600

        # Layer 1: the run directory is owner-only, so another user cannot reach the socket.
        probe = as_user(other_user, user_python, run_dir, "stop")
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout.startswith("REFUSED permission denied"), probe.stdout

        # Layer 2: even if the permissions are loosened, the run checks who is asking.
        os.chmod(run_dir, 0o711)
        os.chmod(run_dir / "control.sock", 0o666)
        probe = as_user(other_user, user_python, run_dir, "stop")
        assert probe.stdout.startswith("REFUSED permission denied: not the owner"), probe.stdout + probe.stderr
        assert run_state(run_dir).state == "running" and summary(run_dir) is None

        # The owner still can.
        assert send_command(run_dir, "stop")["ok"]
        wait_until(lambda: summary(run_dir), 60, "the owner's stop")
        assert summary(run_dir)["status"] == "stopped"
    finally:
        for run_dir in (top / "runs").glob("*"):
            kill_run(run_dir)
            wait_until(lambda run_dir=run_dir: not is_locked(run_dir), 10, "the run's process to go")
        shutil.rmtree(top, ignore_errors=True)


def test_commands_to_a_dead_run_fail_fast(workdir: Path, cleanup: list[Path]) -> None:
    """A stale control socket (the process was killed) is reported, not waited on."""
    import signal
    import time

    spec = write_spec(workdir, run={"epochs": 500}, model={"delay": 0.05})
    run_dir = start_detached(spec, cwd=workdir)
    cleanup.append(run_dir)
    wait_live(run_dir)
    pid = read_json(run_dir / "run.json")["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not is_locked(run_dir), 10, "the process to die")
    assert (run_dir / "control.sock").exists()
    t0 = time.monotonic()
    with pytest.raises(ControlError, match="stale control socket"):
        send_command(run_dir, "pause")
    assert time.monotonic() - t0 < 2
    st = run_state(run_dir)
    assert st.state == "crashed" and "stale control socket" in st.detail
