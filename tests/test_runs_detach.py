"""``tuiloop run --detach``: the command returns at once, the run goes on in the background."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import run_cli, write_spec
from runs_support import ended, start_detached, summary, wait_until

from tuiloop.rundir.state import run_state


def test_detach_returns_at_once_and_the_run_finishes_in_the_background(workdir: Path, cleanup: list[Path]) -> None:
    spec = write_spec(workdir, run={"epochs": 4}, model={"delay": 0.05})
    t0 = time.monotonic()
    done = run_cli("run", "--detach", spec, cwd=workdir)
    took = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    run_dir = next((workdir / "runs").iterdir())
    cleanup.append(run_dir)
    # It says where the run is and how to watch it, and it returned before the run ended.
    assert done.stdout.splitlines()[0].startswith(f"started {run_dir} (pid ")
    assert f"tuiloop attach {run_dir}" in done.stdout
    assert summary(run_dir) is None, f"--detach waited for the run ({took:.1f}s)"

    # Listed as running straight away, even before the training process has started up: it holds
    # the run's lock from the instant its directory exists (4 epochs of 0.4 s cannot be over yet).
    listed = run_cli("ls", workdir / "runs", cwd=workdir)
    assert listed.stdout.splitlines()[1].split()[1] == "running", listed.stdout
    assert run_state(run_dir).state == "running"

    wait_until(lambda: summary(run_dir), 90, "the background run's summary")
    s = summary(run_dir)
    assert (s["status"], s["epochs_done"]) == ("completed", 4)
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    log = (run_dir / "output.log").read_text()
    assert "epoch 4/4" in log and "finished: completed" in log and "\r" not in log
    # what it did while it started is in its event log, for the monitor to show
    logged = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    phases = [e["phase"] for e in logged if e["event"] == "starting"]
    assert phases == [
        "importing torch",
        "importing the spec's targets",
        "loading the data",
        "building the model",
        "building the loss, optimizer and scheduler",
    ]
    assert [e["event"] for e in logged].index("run_started") == len(phases)
    listed = run_cli("ls", workdir / "runs", cwd=workdir)
    assert listed.stdout.splitlines()[1].split()[1:3] == ["finished", "4/4"], listed.stdout


def test_a_detached_run_that_fails_is_listed_as_failed(workdir: Path, cleanup: list[Path]) -> None:
    """A run whose loss turns NaN in the background: its summary and ``ls`` say failed."""
    spec = write_spec(
        workdir,
        data={"target": "tiny.py:with_nan", "shuffle": False},
        model={"out_features": 1},
        loss={"target": "MSELoss"},
    )
    run_dir = start_detached(spec, cwd=workdir)
    cleanup.append(run_dir)
    wait_until(lambda: ended(run_dir), 90, "the run to fail and close")
    assert summary(run_dir)["status"] == "failed"
    listed = run_cli("ls", workdir / "runs", cwd=workdir)
    assert listed.stdout.splitlines()[1].split()[1] == "failed"


def test_a_hung_up_terminal_ends_the_monitor_not_the_run(workdir: Path, cleanup: list[Path]) -> None:
    """SIGHUP without tmux: ``tuiloop run SPEC`` in a pseudo-terminal whose master is closed,
    as sshd does when the connection drops. The monitor goes; the run finishes."""
    import os
    import pty
    import sys

    from conftest import load_ckpt
    from runs_support import new_run_dir, process_gone

    spec = write_spec(workdir, run={"epochs": 6}, model={"delay": 0.05})
    pid, master = pty.fork()
    if pid == 0:  # the child: a terminal session running the monitor
        os.chdir(workdir)
        os.environ.update(TERM="xterm-256color", COLUMNS="100", LINES="30", OMP_NUM_THREADS="1")
        os.execv(sys.executable, [sys.executable, "-m", "tuiloop", "run", str(spec)])
    try:
        run_dir = new_run_dir(workdir / "runs", set())
        cleanup.append(run_dir)
        screen = b""
        while b"RUNNING" not in screen and b"epoch" not in screen:  # the monitor is up and drawing
            screen += os.read(master, 65536)
        os.close(master)  # the terminal is gone: the kernel hangs up its session (SIGHUP)
        wait_until(lambda: process_gone(pid), 10, "the monitor to end with its terminal")
        os.waitpid(pid, 0)
    finally:
        if not process_gone(pid):
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    wait_until(lambda: summary(run_dir), 90, "the run's summary")
    s = summary(run_dir)
    assert (s["status"], s["epochs_done"]) == ("completed", 6)
    assert load_ckpt(run_dir / "checkpoints" / "last.pt")["epoch"] == 6
    assert "Traceback" not in (run_dir / "output.log").read_text()


def test_what_a_resumed_run_prints_while_it_starts_is_in_its_output_log(workdir: Path, cleanup: list[Path]) -> None:
    """A resumed training process prints to the terminal that resumed it until the checkpoint is
    loaded, then to output.log: the lines of that start (the user's module imported here) are in
    output.log too, before what follows. A module that reads stdin meanwhile gets /dev/null."""
    tiny = workdir / "tiny.py"
    tiny.write_text(
        tiny.read_text() + '\nimport sys\nprint("tiny.py imported, the data is built", sys.stdin.read() == "")\n'
    )
    spec = write_spec(workdir, run={"epochs": 2})
    first = run_cli("run", spec, "--headless", cwd=workdir)
    assert first.returncode == 0, first.stderr
    run_dir = next((workdir / "runs").iterdir())
    resumed = run_cli("run", "--resume", run_dir, "--set", "run.epochs=3", "--detach", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    cleanup.append(run_dir)
    assert "tiny.py imported, the data is built True" in resumed.stderr, "relayed to the terminal"
    wait_until(lambda: summary(run_dir) is not None, 60, "the resumed run's end")
    log = (run_dir / "output.log").read_text()
    assert log.count("tiny.py imported, the data is built") == 1, log
    assert log.index("tiny.py imported") < log.index("finished: completed"), log
