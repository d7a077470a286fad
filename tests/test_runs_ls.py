"""``tuiloop ls`` on real runs in every state, and how a run's state is told (crashed vs running)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, run_cli, start_cli, write_spec
from runs_support import events, kill_run, start_detached, wait_live, wait_until

from tuiloop.engine import fmt
from tuiloop.rundir.control import send_command
from tuiloop.rundir.layout import read_json, write_json_atomic
from tuiloop.rundir.lock import is_locked
from tuiloop.rundir.state import run_state

SLOW = {"model": {"delay": 0.05}}  # 8 steps of 50 ms: 0.4 s an epoch, so a test can act mid-run


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder (with tiny.py) for the whole module: the runs below are shared by its tests."""
    folder = tmp_path_factory.mktemp("ls")
    shutil.copy(FIXTURES / "tiny.py", folder / "tiny.py")
    return folder


@pytest.fixture(scope="module")
def runs(workdir: Path) -> Iterator[dict[str, Path]]:
    """One out_dir holding a finished, early-stopped, failed, stopped, crashed and running run,
    and one that failed before its first step (a typo in a data argument)."""
    made: dict[str, Path] = {}
    headless = {
        "finished": write_spec(workdir, "finished.toml", run={"name": "done", "epochs": 2}),
        # lr 0: val_loss never improves, so patience 1 stops it after the second check
        "early_stopped": write_spec(
            workdir,
            "early.toml",
            run={"name": "plateau", "epochs": 6},
            optimizer={"target": "SGD", "lr": 0.0},
            early_stopping={"monitor": "val_loss", "patience": 1},
        ),
        "failed": write_spec(
            workdir,
            "failed.toml",
            run={"name": "nan"},
            data={"target": "tiny.py:with_nan", "shuffle": False},
            model={"out_features": 1},
            loss={"target": "MSELoss"},
        ),
    }
    setup = write_spec(
        workdir, "setup.toml", run={"name": "typo"}, model={"out_features": 1}
    )  # fails at the first batch
    slow = write_spec(workdir, "slow.toml", run={"name": "slow", "epochs": 200}, **SLOW)
    out_dir = workdir / "runs"
    try:
        procs = [start_cli("run", spec, "--headless", cwd=workdir) for spec in [*headless.values(), setup]]
        made["stopped"] = start_detached(slow, cwd=workdir)
        made["crashed"] = start_detached(slow, cwd=workdir)
        made["running"] = start_detached(slow, "run.name=an-experiment-with-a-rather-long-name", cwd=workdir)
        for proc in procs:
            proc.communicate(timeout=120)
        for p in out_dir.iterdir():
            for key, prefix in (
                ("finished", "done-"),
                ("early_stopped", "plateau-"),
                ("failed", "nan-"),
                ("setup", "typo-"),
            ):
                if p.name.startswith(prefix):
                    made[key] = p
        for key in ("stopped", "crashed", "running"):
            wait_live(made[key])
        for key in ("stopped", "crashed"):  # some history first: a validated epoch
            path = made[key]
            wait_until(
                lambda path=path: any(e["event"] == "validated" for e in events(path)), 60, f"an epoch of the {key} run"
            )
        send_command(made["stopped"], "stop")
        wait_until(lambda: read_json(made["stopped"] / "summary.json"), 60, "the stopped run's summary")
        pid = read_json(made["crashed"] / "run.json")["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not is_locked(made["crashed"]), 10, "the killed run's lock to go")
        yield made
    finally:
        for path in made.values():
            kill_run(path)


def ls_lines(out_dir: Path, cwd: Path) -> list[str]:
    done = run_cli("ls", out_dir, cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout.rstrip("\n").split("\n")


def row_of(lines: list[str], run_dir: Path) -> str:
    tail = run_dir.name[-4:]  # the random hex ends every name and survives shortening
    hits = [line for line in lines if line.rstrip().split()[0].endswith(tail)]
    assert len(hits) == 1, (run_dir.name, lines)
    return hits[0]


def test_ls_shows_every_state_sorted_with_whole_names_when_piped(runs: dict[str, Path], workdir: Path) -> None:
    out_dir = workdir / "runs"
    lines = ls_lines(out_dir, workdir)
    assert lines[0].split()[:3] == ["RUN", "STATE", "EPOCHS"]
    shown = {key: path for key, path in runs.items() if key != "setup"}
    assert len(lines) == 1 + len(shown) + 1
    assert lines[-1] == "(1 run that failed at setup hidden; --all shows it)"
    lines = lines[:-1]

    for key, path in shown.items():  # each key is the state its run is in
        row = row_of(lines, path)
        assert row.split()[1] == key, f"{key}: {row}"
        assert row.split()[0] == path.name, "piped (into a log or grep), names are never cut"

    # Sorted by start time, oldest first.
    started = {read_json(p / "run.json")["started"]: p for p in shown.values()}
    order = [started[t].name[-4:] for t in sorted(started)]
    assert [line.split()[0][-4:] for line in lines[1:]] == order

    # Epochs done and best metric come from the summary of runs that ended...
    for key in ("finished", "early_stopped", "stopped"):
        s = read_json(runs[key] / "summary.json")
        row = row_of(lines, runs[key])
        total = {"finished": 2, "early_stopped": 6, "stopped": 200}[key]
        assert f" {s['epochs_done']}/{total} " in row, row
        assert f"{fmt.value(s['best_value'])} @{s['best_epoch']}" in row, row
    assert read_json(runs["early_stopped"] / "summary.json")["epochs_done"] == 2
    assert read_json(runs["failed"] / "summary.json")["status"] == "failed"
    # ... and from the event log of those that did not (the crashed one validated some epochs).
    crashed_done = max(
        e["epoch"]
        for e in map(json.loads, (runs["crashed"] / "events.jsonl").read_text().splitlines())
        if e["event"] == "validated"
    )
    assert re.search(rf" {crashed_done}/200 ", row_of(lines, runs["crashed"]))
    assert re.search(r" \d+/200 ", row_of(lines, runs["running"]))

    # Any unique part of a name finds the run.
    found = run_cli("show", runs["running"].name[-4:], cwd=workdir)
    assert found.returncode == 0, found.stderr
    assert f"run directory: {runs['running']}" in found.stdout
    assert "still running" in found.stdout


def test_ls_filters_by_state_and_all_shows_setup_failures(runs: dict[str, Path], workdir: Path) -> None:
    out_dir = workdir / "runs"
    everything = run_cli("ls", out_dir, "--all", cwd=workdir).stdout.splitlines()
    assert len(everything) == 1 + len(runs) and row_of(everything, runs["setup"]).split()[1] == "failed"
    failed = run_cli("ls", out_dir, "--state", "failed", cwd=workdir).stdout.splitlines()
    assert sorted(line.split()[0] for line in failed[1:]) == sorted([runs["failed"].name, runs["setup"].name])
    live = run_cli("ls", out_dir, "--state", "running,paused,crashed", cwd=workdir).stdout.splitlines()
    assert {line.split()[1] for line in live[1:]} <= {"running", "paused", "crashed"} and len(live) == 3
    none = run_cli("ls", out_dir, "--state", "forced", cwd=workdir)
    assert (none.returncode, none.stdout.strip()) == (0, f"no forced runs in {out_dir}")
    bad = run_cli("ls", out_dir, "--state", "runing", cwd=workdir)
    assert bad.returncode == 2 and "use one or more of running, paused" in bad.stderr


def test_liveness_is_the_lock_not_the_pid(runs: dict[str, Path], workdir: Path) -> None:
    crashed, running = runs["crashed"], runs["running"]
    assert run_state(crashed).state == "crashed"
    assert "stale control socket" in run_state(crashed).detail
    # Its pid now belongs to a live tuiloop process (the running run's worker): still crashed,
    # because nobody holds its lock.
    info = read_json(crashed / "run.json")
    live_pid = read_json(running / "run.json")["pid"]
    write_json_atomic(crashed / "run.json", {**info, "pid": live_pid})
    assert run_state(crashed).state == "crashed"
    (crashed / "control.sock").unlink()
    assert run_state(crashed).state == "crashed"
    # And a run whose recorded pid is nonsense is live while its lock is held.
    info = read_json(running / "run.json")
    write_json_atomic(running / "run.json", {**info, "pid": 999999999})
    try:
        assert run_state(running).state == "running"
    finally:
        write_json_atomic(running / "run.json", info)
    lines = ls_lines(workdir / "runs", workdir)
    assert row_of(lines, crashed).split()[1] == "crashed"


def test_a_run_whose_summary_could_not_be_written_is_listed_as_its_log_says_it_ended(
    runs: dict[str, Path], workdir: Path
) -> None:
    """A full disk took summary.json but not the log's finished line: ``ls`` said crashed.
    Now the log's last session says how it ended; a session started after it (a resume killed
    before it finished) is crashed again."""
    out_dir = workdir / "no-summary"
    out_dir.mkdir()
    for key in ("finished", "stopped"):
        copy = shutil.copytree(runs[key], out_dir / runs[key].name)
        (copy / "summary.json").unlink()
        st = run_state(copy)
        assert st.state == key and st.detail == "from its event log: no summary.json (it could not be written)"
        assert row_of(ls_lines(out_dir, workdir), copy).split()[1] == key
    resumed = out_dir / runs["stopped"].name
    started = [line for line in (resumed / "events.jsonl").read_text().splitlines() if '"run_started"' in line]
    with open(resumed / "events.jsonl", "a") as log:
        log.write(started[0] + "\n")
    assert run_state(resumed).state == "crashed"
    assert row_of(ls_lines(out_dir, workdir), resumed).split()[1] == "crashed"


def test_ls_shows_a_paused_run_as_paused(runs: dict[str, Path], workdir: Path) -> None:
    running = runs["running"]
    send_command(running, "pause")
    wait_until(
        lambda: [e["state"] for e in events(running) if e["event"] == "state"][-1:] == ["paused"],
        20,
        "the pause to reach the log",
    )
    assert row_of(ls_lines(workdir / "runs", workdir), running).split()[1] == "paused"
    send_command(running, "resume")
    wait_until(
        lambda: [e["state"] for e in events(running) if e["event"] == "state"][-1:] == ["running"], 20, "the resume"
    )
    assert row_of(ls_lines(workdir / "runs", workdir), running).split()[1] == "running"


def _seconds(cell: str) -> int:
    """An ls TIME cell (42s, 4m05s) back in seconds."""
    m = re.fullmatch(r"(?:(\d+)m)?(\d+)s", cell)
    assert m, cell
    return int(m[1] or 0) * 60 + int(m[2])


def test_ls_gives_a_run_the_duration_its_summary_records(runs: dict[str, Path], workdir: Path) -> None:
    """One definition of a run's duration: its last session's training, from run_started to
    finished. summary.json records it (wall_time_s) and ls shows it; a run without a summary is
    measured the same way in its log. (ls used to count from run.json's start, written before a
    background run's process had even imported torch, to the moment the summary was written.)"""
    before = time.time()
    lines = ls_lines(workdir / "runs", workdir)
    after = time.time()
    for key in ("finished", "early_stopped", "failed", "stopped"):
        s = read_json(runs[key] / "summary.json")
        assert row_of(lines, runs[key]).split()[-3] == fmt.duration(s["wall_time_s"]), key
        log = events(runs[key])
        (finished,) = [e for e in log if e["event"] == "finished"]
        session = [e["time"] for e in log if e["event"] == "run_started"][-1]
        assert finished["time"] - session == pytest.approx(s["wall_time_s"], abs=0.05), key
    stopped = read_json(runs["stopped"] / "summary.json")
    assert stopped["ended"] - read_json(runs["stopped"] / "run.json")["started"] > stopped["wall_time_s"]
    crashed = events(runs["crashed"])
    session = [e["time"] for e in crashed if e["event"] == "run_started"][-1]
    last = max(e["time"] for e in crashed)
    assert row_of(lines, runs["crashed"]).split()[-3] == fmt.duration(last - session)
    session = [e["time"] for e in events(runs["running"]) if e["event"] == "run_started"][-1]
    live = _seconds(row_of(lines, runs["running"]).split()[-3])
    assert round(before - session) <= live <= round(after - session)


def test_ls_of_an_empty_or_missing_runs_directory_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "runs"
    empty.mkdir()
    done = run_cli("ls", empty, cwd=tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, f"no runs in {empty}")
    missing = run_cli("ls", tmp_path / "nope", cwd=tmp_path)
    assert missing.returncode == 2 and "no runs directory" in missing.stderr


def test_ls_on_a_terminal_fits_its_width(runs: dict[str, Path], workdir: Path) -> None:
    """Run through a pseudo-terminal 60 columns wide: the table narrows to fit."""
    import pty

    code = f"import os, sys; os.environ['COLUMNS'] = '60'; sys.argv = ['tuiloop', 'ls', {str(workdir / 'runs')!r}]; from tuiloop.cli import main; raise SystemExit(main())"
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-c", code])
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    lines = b"".join(chunks).decode().replace("\r\n", "\n").rstrip("\n").split("\n")
    assert len(lines) == 1 + 6 + 1 and max(len(line) for line in lines) <= 60, lines
    assert row_of(lines, runs["crashed"]).split()[1] == "crashed"
    # On a terminal the long name is shortened in the middle to fit; any unique part finds it.
    long_row = row_of(lines, runs["running"]).split()[0]
    assert "~" in long_row and long_row != runs["running"].name


def test_run_dir_and_socket_are_owner_only(runs: dict[str, Path]) -> None:
    running = runs["running"]
    assert running.stat().st_mode & 0o777 == 0o700
    assert (running / "control.sock").stat().st_mode & 0o777 == 0o600
    assert subprocess.run(["test", "-S", str(running / "control.sock")]).returncode == 0


def test_a_run_on_another_machine_is_judged_by_its_log(runs: dict[str, Path], tmp_path: Path) -> None:
    """On a shared filesystem the pid and socket of another host's run mean nothing here."""
    copy = tmp_path / "runs" / runs["crashed"].name
    shutil.copytree(runs["crashed"], copy, ignore=shutil.ignore_patterns("control.sock"))
    info = read_json(copy / "run.json")
    write_json_atomic(copy / "run.json", {**info, "host": "gpu-node-7"})
    st = run_state(copy)  # its log was just written (copied)
    assert st.state == "running" and "gpu-node-7" in st.detail
    attach = run_cli("attach", copy, cwd=tmp_path)
    assert attach.returncode == 1 and "ssh gpu-node-7" in attach.stderr
    old = time.time() - 3600
    os.utime(copy / "events.jsonl", (old, old))
    assert run_state(copy).state == "crashed"
