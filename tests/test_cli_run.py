"""The real ``tuiloop run`` command, headless: exact resume, stop over the control socket,
signals (SIGINT, a second SIGINT, SIGTERM) and plain output."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from conftest import DEMOS, assert_same_weights, load_ckpt, only_run, run_cli, start_cli, write_spec
from runs_support import read_stderr_until

from tuiloop.rundir.control import send_command
from tuiloop.rundir.eventlog import EventTail, read_events
from tuiloop.rundir.layout import read_json
from tuiloop.rundir.state import run_state

# Early stopping that can only count up (nothing improves val_acc by 0.5): it ends at epoch 4.
RESUMABLE = dict(
    model={"dropout": 0.3},
    scheduler={"target": "StepLR", "step_size": 1, "gamma": 0.8},
    early_stopping={"monitor": "val_acc", "mode": "max", "patience": 3, "min_delta": 0.5},
)


def wait_for_run_dir(out_dir: Path, proc: subprocess.Popen, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out_dir.is_dir() and any(out_dir.iterdir()):
            return only_run(out_dir)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("no run directory appeared")


def wait_for_steps(run_dir: Path, proc: subprocess.Popen, accept: Any = lambda e: True, timeout: float = 60) -> Any:
    """The first train_steps event in events.jsonl that ``accept`` likes."""
    tail = EventTail(run_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in tail.poll():
            if e.kind == "train_steps" and accept(e):
                return e
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError("training never reached the expected step")


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


# ---- exact resume through the command line ------------------------------------------------------------
def test_stop_after_epoch_k_then_resume_is_exact(workdir: Path) -> None:
    spec = write_spec(workdir, run={"epochs": 10}, **RESUMABLE)
    ref = run_cli("run", spec, "--headless", "--set", "run.out_dir=ref", cwd=workdir)
    assert ref.returncode == 0, ref.stderr
    ref_dir = only_run(workdir / "ref")
    ref_summary = read_json(ref_dir / "summary.json")
    assert ref_summary is not None and (ref_summary["status"], ref_summary["epochs_done"]) == ("early_stopped", 4)

    first = run_cli("run", spec, "--headless", "--set", "run.out_dir=cut", "--set", "run.epochs=2", cwd=workdir)
    assert first.returncode == 0, first.stderr
    run_dir = only_run(workdir / "cut")
    assert read_json(run_dir / "summary.json")["status"] == "completed"  # type: ignore[index]
    assert load_ckpt(run_dir / "checkpoints" / "last.pt")["early_stopping"]["counter"] == 1
    log_before = (run_dir / "events.jsonl").read_bytes()

    second = run_cli("run", "--resume", run_dir, "--headless", "--set", "run.epochs=10", cwd=workdir)
    assert second.returncode == 0, second.stderr
    assert "resumed at epoch 3, step 16" in second.stdout
    assert [p.name for p in (workdir / "cut").iterdir()] == [run_dir.name], "resume must not start a new run directory"

    for name in ("last.pt", "best.pt"):
        a, b = load_ckpt(run_dir / "checkpoints" / name), load_ckpt(ref_dir / "checkpoints" / name)
        assert_same_weights(a["model_state_dict"], b["model_state_dict"])
        assert (a["epoch"], a["step"], a["early_stopping"], a["best"]) == (
            b["epoch"],
            b["step"],
            b["early_stopping"],
            b["best"],
        )
        assert a["scheduler_state_dict"] == b["scheduler_state_dict"]
    summary = read_json(run_dir / "summary.json")
    assert summary is not None
    for key in ("status", "epochs_done", "steps", "best_value", "best_epoch", "final_metrics"):
        assert summary[key] == ref_summary[key], key

    log_after = (run_dir / "events.jsonl").read_bytes()
    assert log_after.startswith(log_before), "events.jsonl must be appended to, not rewritten"
    events, _ = read_events(run_dir)
    started = [e for e in events if e.kind == "run_started"]
    assert len(started) == 2 and started[1].resumed_from and (started[1].start_epoch, started[1].start_step) == (2, 16)
    assert [e.status for e in events if e.kind == "finished"] == ["completed", "early_stopped"]
    assert [e.epoch for e in events if e.kind == "validated"] == [1, 2, 3, 4]
    info = read_json(run_dir / "run.json")
    assert info is not None and len(info["resumes"]) == 1


def test_stop_mid_epoch_over_the_control_socket_then_resume(workdir: Path) -> None:
    """A live run is told 'stop' mid-epoch over its socket; resuming it matches the run never stopped."""
    spec = write_spec(workdir, run={"epochs": 3, "log_interval": 0.01}, model={"dropout": 0.3})
    ref = run_cli("run", spec, "--headless", "--set", "run.out_dir=ref", cwd=workdir)
    assert ref.returncode == 0, ref.stderr

    proc = start_cli("run", spec, "--headless", "--set", "run.out_dir=cut", "--set", "model.delay=0.05", cwd=workdir)
    try:
        run_dir = wait_for_run_dir(workdir / "cut", proc)
        wait_for_steps(run_dir, proc, lambda e: e.epoch == 2 and 1 <= e.step_in_epoch <= 4)
        assert send_command(run_dir, "ping")["pid"] == proc.pid
        assert send_command(run_dir, "stop") == {"ok": True}
        code, out, err = finish(proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert re.search(r"state: stopping at step \d+ \(stopped by request\), \d\d:\d\d:\d\d", out), out
    summary = read_json(run_dir / "summary.json")
    assert summary is not None and summary["status"] == "stopped"
    assert not (run_dir / "control.sock").exists()
    ck = load_ckpt(run_dir / "checkpoints" / "last.pt")
    assert ck["epoch"] == 1 and 1 <= ck["batch_in_epoch"] <= 7, "the stop should land mid-epoch"

    # the delay only slows the forward pass (and [model] keys cannot change on resume)
    resumed = run_cli("run", "--resume", run_dir, "--headless", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    want = load_ckpt(only_run(workdir / "ref") / "checkpoints" / "last.pt")
    got = load_ckpt(run_dir / "checkpoints" / "last.pt")
    assert_same_weights(got["model_state_dict"], want["model_state_dict"])
    assert got["step"] == want["step"] == 24
    assert read_json(run_dir / "summary.json")["status"] == "completed"  # type: ignore[index]


def test_sigkilled_run_resumes_exactly(workdir: Path) -> None:
    """SIGKILL a run at a random moment (maybe mid-save): last.pt loads, and resuming from it
    ends with the weights of the run that was never killed."""
    spec = write_spec(workdir, run={"epochs": 12, "log_interval": 0.01}, model={"dropout": 0.3})
    ref = run_cli("run", spec, "--headless", "--set", "run.out_dir=ref", cwd=workdir)
    assert ref.returncode == 0, ref.stderr

    proc = start_cli("run", spec, "--headless", "--set", "run.out_dir=cut", "--set", "model.delay=0.004", cwd=workdir)
    try:
        run_dir = wait_for_run_dir(workdir / "cut", proc)
        wait_for_steps(run_dir, proc, lambda e: e.epoch >= 4)
        time.sleep(random.uniform(0.0, 0.1))  # a random moment to kill it at (maybe mid-save): the point of the test
        proc.kill()
        proc.wait()
    finally:
        proc.kill()
    assert run_state(run_dir).state == "crashed"
    ck = load_ckpt(run_dir / "checkpoints" / "last.pt")
    assert 3 <= ck["epoch"] < 12
    with open(run_dir / "events.jsonl", "ab") as log:  # as if killed in the middle of writing a long line
        log.write(b'{"time": 1.0, "epoch": 3, "first_step": 50, "losses": [0.5, 0.4')

    resumed = run_cli("run", "--resume", run_dir, "--headless", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at epoch {ck['epoch'] + 1}" in resumed.stdout
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    torn = [ln for ln in lines if not ln.endswith("}")]
    assert torn == ['{"time": 1.0, "epoch": 3, "first_step": 50, "losses": [0.5, 0.4'], "only the torn line is lost"
    assert [e.resumed_from for e in read_events(run_dir)[0] if e.kind == "run_started"][-1] is not None
    want = load_ckpt(only_run(workdir / "ref") / "checkpoints" / "last.pt")
    got = load_ckpt(run_dir / "checkpoints" / "last.pt")
    assert_same_weights(got["model_state_dict"], want["model_state_dict"])
    assert not list((run_dir / "checkpoints").glob(".*.tmp")), "temp files of the killed writer are cleaned up"
    assert read_json(run_dir / "summary.json")["status"] == "completed"  # type: ignore[index]


def test_resume_of_a_folder_that_is_no_run_is_a_one_line_error(workdir: Path) -> None:
    r = run_cli("run", "--resume", workdir, "--headless", cwd=workdir)
    assert r.returncode == 2 and "not a tuiloop run directory" in r.stderr and "Traceback" not in r.stderr


# ---- signals ------------------------------------------------------------------------------------------
def slow_run(workdir: Path, delay: float) -> tuple[subprocess.Popen, Path]:
    spec = write_spec(workdir, run={"epochs": 50, "log_interval": 0.01}, model={"delay": delay})
    proc = start_cli("run", spec, "--headless", cwd=workdir)
    run_dir = wait_for_run_dir(workdir / "runs", proc)
    wait_for_steps(run_dir, proc)
    return proc, run_dir


def test_sigint_stops_gracefully_and_saves(workdir: Path) -> None:
    proc, run_dir = slow_run(workdir, delay=0.02)
    try:
        proc.send_signal(signal.SIGINT)
        code, out, err = finish(proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert "interrupt: stopping after this step and saving" in err and "Traceback" not in err
    summary = read_json(run_dir / "summary.json")
    assert summary is not None and summary["status"] == "stopped" and "SIGINT" in summary["reason"]
    ck = load_ckpt(run_dir / "checkpoints" / "last.pt")
    assert ck["step"] == summary["steps"] > 0
    assert run_state(run_dir).state == "stopped"
    assert "finished: stopped" in out


def test_second_sigint_forces_exit_130(workdir: Path) -> None:
    proc, run_dir = slow_run(workdir, delay=1.0)  # one step lasts a second: the second ^C comes first
    try:
        proc.send_signal(signal.SIGINT)
        heard = read_stderr_until(proc, "interrupt: stopping after this step", 10, "the first interrupt to be heard")
        proc.send_signal(signal.SIGINT)
        code, out, err = finish(proc, timeout=10)
        err = heard + err
    finally:
        proc.kill()
    assert code == 130
    assert "second interrupt, exiting now" in err and "Traceback" not in err
    summary = read_json(run_dir / "summary.json")
    assert summary is not None and (summary["status"], summary["reason"]) == ("forced", "forced to exit without saving")
    assert run_state(run_dir).state == "forced"
    assert not (run_dir / "checkpoints" / "last.pt").exists(), "forced: nothing is saved"


def test_sigterm_stops_gracefully(workdir: Path) -> None:
    proc, run_dir = slow_run(workdir, delay=0.02)
    try:
        proc.send_signal(signal.SIGTERM)
        code, _, err = finish(proc)
    finally:
        proc.kill()
    assert code == 0, err
    summary = read_json(run_dir / "summary.json")
    assert summary is not None and summary["status"] == "stopped" and "SIGTERM" in summary["reason"]
    assert (run_dir / "checkpoints" / "last.pt").is_file()


# ---- plain output ---------------------------------------------------------------------------------------
def test_piped_output_is_plain_lines(tmp_path: Path) -> None:
    """Piped stdout (no TTY) gives plain lines, with --headless and without it."""
    for extra in (["--headless"], []):
        out_dir = tmp_path / ("a" if extra else "b")
        r = run_cli(
            "run",
            DEMOS / "digits.toml",
            *extra,
            "--set",
            "run.epochs=3",
            "--set",
            f"run.out_dir={out_dir}",
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stderr
        text = r.stdout + r.stderr
        assert "\r" not in text and "\x1b" not in text
        lines = r.stdout.splitlines()
        assert lines[0].startswith("run digits-mlp started") and lines[1].startswith("run directory: ")
        assert sum(line.startswith("epoch ") for line in lines) == 3
        es_lines = [line for line in lines if line.startswith("epoch ")]
        assert all("patience " in line for line in es_lines), "the early-stopping counter rides on the epoch line"
        assert not any(line.startswith("early stopping") for line in lines)
        assert lines[-1].startswith("finished: completed (3 epochs done)")
        events = [json.loads(line) for line in (only_run(out_dir) / "events.jsonl").read_text().splitlines()]
        assert events[0]["event"] == "run_started" and events[-1]["event"] == "finished"


def test_one_epoch_of_one_batch_reads_in_the_singular(workdir: Path) -> None:
    """120 training samples in one batch of 120: every count of one is worded as one."""
    r = run_cli("run", write_spec(workdir, run={"epochs": 1}, data={"batch_size": 120}), "--headless", cwd=workdir)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].endswith("1 epoch of 1 step"), lines[0]
    assert re.match(r"finished: completed \(1 epoch done\) after 1 epoch, 1 step in \d+\.\ds", lines[-1]), lines[-1]
    assert " 1 steps" not in r.stdout and " 1 epochs" not in r.stdout
    assert read_json(only_run(workdir / "runs") / "summary.json")["reason"] == "1 epoch done"  # type: ignore[index]


# ---- the command's own help ---------------------------------------------------------------------------
def test_help_and_usage_errors_name_only_the_public_commands(tmp_path: Path) -> None:
    """The subcommands tuiloop starts in its own processes (_train, _launch, _rank) are not offered
    to a person, in --help or in the error for an unknown command, and they still parse."""
    public = ["run", "attach", "show", "export", "eval", "compare", "ls", "ctl", "status"]
    helped = run_cli("--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    listed = re.findall(r"^    (\S+) ", helped.stdout, flags=re.MULTILINE)
    assert listed == public, helped.stdout
    assert "_train" not in helped.stdout and "SUPPRESS" not in helped.stdout and "_rank" not in helped.stdout
    unknown = run_cli("trian", cwd=tmp_path)
    assert unknown.returncode == 2 and not unknown.stdout
    assert f"invalid choice: 'trian' (choose from {', '.join(map(repr, public))})" in unknown.stderr
    assert "_launch" not in unknown.stderr
    for internal, option in (("_train", "--lock-fd"), ("_launch", "--report-ready"), ("_rank", "--resume")):
        own = run_cli(internal, "--help", cwd=tmp_path)
        assert own.returncode == 0 and own.stdout.startswith(f"usage: tuiloop {internal} ") and option in own.stdout
    missing = run_cli("_train", tmp_path, cwd=tmp_path)  # parsed by its own parser: its own required option
    assert missing.returncode == 2 and "the following arguments are required: --lock-fd" in missing.stderr
