"""``tuiloop export`` (CSV, TensorBoard) and the live TensorBoard mirror (``[run] tensorboard = true``),
through the real command: each file read back with a reader of its own format, checked against events.jsonl."""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, only_run, run_cli, write_spec
from runs_support import TUILOOP, Tmux, events, kill_run, last_step, start_detached, wait_live, wait_until

from tuiloop.rundir.layout import read_json
from tuiloop.rundir.lock import is_locked

FIXED = ["kind", "epoch", "step", "time", "train_loss", "lr", "grad_norm", "samples_per_s"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    shutil.copy(FIXTURES / "tiny.py", folder / "tiny.py")
    return folder


@pytest.fixture(scope="module")
def finished(workdir: Path) -> Path:
    """Three epochs of 8 steps, the gradient norm logged; no live mirror."""
    spec = write_spec(
        workdir, "plain.toml", run={"name": "plain", "out_dir": str(workdir / "runs")}, train={"log_grad_norm": True}
    )
    done = run_cli("run", spec, "--headless", cwd=workdir)
    assert done.returncode == 0, done.stderr
    return only_run(workdir / "runs")


@pytest.fixture(scope="module")
def mirrored(workdir: Path) -> Path:
    """Two epochs with the live TensorBoard mirror."""
    spec = write_spec(
        workdir,
        "mirrored.toml",
        run={"name": "mirrored", "epochs": 2, "tensorboard": True, "out_dir": str(workdir / "mirrored")},
    )
    done = run_cli("run", spec, "--headless", cwd=workdir)
    assert done.returncode == 0, done.stderr
    return only_run(workdir / "mirrored")


@pytest.fixture(scope="module")
def resumed(workdir: Path) -> Iterator[dict[str, Any]]:
    """A mirrored run exported while live, killed (SIGKILL) in epoch 2 after logging steps its
    checkpoint does not hold, exported crashed, then resumed to the end."""
    spec = write_spec(
        workdir,
        "slow.toml",
        run={"name": "slow", "epochs": 100, "tensorboard": True, "out_dir": str(workdir / "slow")},
        model={"delay": 0.05},
    )
    run_dir = start_detached(spec, cwd=workdir)
    try:
        wait_live(run_dir)
        wait_until(lambda: last_step(run_dir) >= 2, 60, "the first steps")
        live = run_cli("export", run_dir, "-o", workdir / "live.csv", cwd=workdir)
        wait_until(lambda: last_step(run_dir) >= 11, 60, "steps of epoch 2")
        os.kill(read_json(run_dir / "run.json")["pid"], signal.SIGKILL)
        wait_until(lambda: not is_locked(run_dir), 10, "the process to die")
        crashed_log = events(run_dir)
        crashed = run_cli("export", run_dir, "-o", workdir / "crashed.csv", cwd=workdir)
        # one epoch more than last.pt holds (on a loaded machine the kill may land after epoch 2)
        epochs = 1 + max(e["epoch"] for e in crashed_log if e["event"] == "checkpoint" and e["tag"] == "last")
        again = run_cli("run", "--resume", run_dir, "--headless", "--set", f"run.epochs={epochs}", cwd=workdir)
        assert again.returncode == 0, again.stderr
        yield {"run_dir": run_dir, "live": live, "crashed": crashed, "crashed_log": crashed_log, "epochs": epochs}
    finally:
        kill_run(run_dir)


# ---- reading back ----------------------------------------------------------------------------------
def read_csv(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def logged_steps(log: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """step -> what the log says of it, the last time it was logged (a resumed start drops later steps)."""
    out: dict[int, dict[str, Any]] = {}
    for e in log:
        if e["event"] == "run_started" and e.get("resumed_from"):
            out = {s: v for s, v in out.items() if s <= e["start_step"]}
        elif e["event"] == "train_steps":
            norms = e.get("grad_norms") or []
            for i, loss in enumerate(e["losses"]):
                out[e["first_step"] + i] = {
                    "epoch": e["epoch"],
                    "time": e["time"],
                    "loss": loss,
                    "lr": e["lr"],
                    "grad_norm": norms[i] if norms else None,
                    "rate": e["samples_per_s"],
                }
    return out


def validations(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in log if e["event"] == "validated"]


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecords(path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file (u64 length, its masked CRC-32C, data, the data's); a torn tail ends it."""
    data = path.read_bytes()
    pos = 0
    while pos + 12 <= len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[pos + 8 : pos + 12])[0] == _masked(header), f"{path}: bad length CRC at {pos}"
        if pos + 16 + length > len(data):
            return  # a killed writer's last record
        body = data[pos + 12 : pos + 12 + length]
        assert struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])[0] == _masked(body), (
            f"{path}: bad data CRC at {pos}"
        )
        yield body
        pos += 16 + length


def read_scalars(logdir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """tag -> [(step, value, wall time)] as TensorBoard shows them: files in name (time) order, a
    session START hiding the earlier points from its step on."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    out: dict[str, list[tuple[int, float, float]]] = {}
    files = sorted(logdir.glob("events.out.tfevents.*"))
    assert files, f"no event files in {logdir}"
    for path in files:
        for record in tfrecords(path):
            ev = Event.FromString(record)
            if ev.HasField("session_log") and ev.session_log.status == SessionLog.START:
                out = {tag: [p for p in points if p[0] < ev.step] for tag, points in out.items()}
            for v in ev.summary.value:
                out.setdefault(v.tag, []).append((ev.step, v.simple_value, ev.wall_time))
    return out


def check_scalars(
    scalars: dict[str, list[tuple[int, float, float]]], log: list[dict[str, Any]], grad_norm: bool
) -> None:
    """The scalars hold every step of the log once (as last logged), and every validation."""
    steps = logged_steps(log)
    vals = validations(log)
    expected = {
        "train/loss",
        "train/lr",
        "train/samples_per_s",
        "train/epoch_loss",
        "val/loss",
        "val/acc",
        "val/ppl",
    } | ({"train/grad_norm"} if grad_norm else set())
    assert set(scalars) == expected
    for tag, key in (
        ("train/loss", "loss"),
        ("train/lr", "lr"),
        ("train/samples_per_s", "rate"),
        ("train/grad_norm", "grad_norm"),
    ):
        if tag not in scalars:
            continue
        assert [p[0] for p in scalars[tag]] == sorted(steps), tag
        assert [p[1] for p in scalars[tag]] == pytest.approx([steps[s][key] for s in sorted(steps)], rel=1e-6), tag
        assert [p[2] for p in scalars[tag]] == [steps[s]["time"] for s in sorted(steps)], tag
    for tag, metric in (
        ("val/loss", "val_loss"),
        ("val/acc", "val_acc"),
        ("val/ppl", "val_ppl"),
        ("train/epoch_loss", "train_loss"),
    ):
        assert [(p[0], p[2]) for p in scalars[tag]] == [(v["step"], v["time"]) for v in vals], tag
        assert [p[1] for p in scalars[tag]] == pytest.approx([v["metrics"][metric] for v in vals], rel=1e-6), tag


def check_csv(text: str, log: list[dict[str, Any]]) -> list[dict[str, str]]:
    columns, rows = read_csv(text)
    assert columns == [*FIXED, "val_loss", "val_acc", "val_ppl"]  # val_ppl: a cross-entropy's perplexity
    steps = logged_steps(log)
    step_rows = [r for r in rows if r["kind"] == "step"]
    assert [int(r["step"]) for r in step_rows] == sorted(steps)
    for r in step_rows:
        s = steps[int(r["step"])]
        assert (
            int(r["epoch"]),
            float(r["time"]),
            float(r["train_loss"]),
            float(r["lr"]),
            float(r["samples_per_s"]),
        ) == (s["epoch"], s["time"], s["loss"], s["lr"], s["rate"])
        assert r["grad_norm"] == ("" if s["grad_norm"] is None else str(s["grad_norm"]))
        assert r["val_loss"] == r["val_acc"] == r["val_ppl"] == ""
    val_rows = [r for r in rows if r["kind"] == "validation"]
    assert [(int(r["epoch"]), int(r["step"]), float(r["time"])) for r in val_rows] == [
        (v["epoch"], v["step"], v["time"]) for v in validations(log)
    ]
    for r, v in zip(val_rows, validations(log), strict=True):
        assert (float(r["train_loss"]), float(r["val_loss"]), float(r["val_acc"])) == (
            v["metrics"]["train_loss"],
            v["metrics"]["val_loss"],
            v["metrics"]["val_acc"],
        )
        assert r["lr"] == r["grad_norm"] == r["samples_per_s"] == ""
    # each validation right after the last step of its epoch
    at = [i for i, r in enumerate(rows) if r["kind"] == "validation"]
    assert [(rows[i - 1]["kind"], rows[i - 1]["step"]) for i in at] == [("step", rows[i]["step"]) for i in at]
    return rows


# ---- CSV -------------------------------------------------------------------------------------------
def test_csv_holds_every_step_and_validation_of_the_log(finished: Path, workdir: Path) -> None:
    done = run_cli("export", "plain", cwd=workdir)  # a part of the run's name under ./runs, CSV by default
    assert done.returncode == 0, done.stderr
    path = finished / "export.csv"
    assert done.stdout.strip() == f"wrote 27 rows (24 steps, 3 validations) to {path}"
    rows = check_csv(path.read_text(encoding="utf-8"), events(finished))
    assert len(rows) == 27 and all(r["grad_norm"] for r in rows if r["kind"] == "step")
    assert [r["epoch"] for r in rows if r["kind"] == "validation"] == ["1", "2", "3"]  # epochs count from 1


def test_csv_to_stdout_and_to_a_path(finished: Path, workdir: Path) -> None:
    piped = run_cli("export", finished, "--format", "csv", "-o", "-", cwd=workdir)
    assert piped.returncode == 0 and piped.stderr == ""
    check_csv(piped.stdout, events(finished))
    out = workdir / "elsewhere.csv"
    done = run_cli("export", finished, "-o", out, cwd=workdir)
    assert done.returncode == 0 and out.read_text(encoding="utf-8") == piped.stdout


# ---- TensorBoard -----------------------------------------------------------------------------------
def test_tensorboard_export_holds_the_scalars_of_the_log(finished: Path, workdir: Path) -> None:
    done = run_cli("export", finished, "--format", "tensorboard", cwd=workdir)
    assert done.returncode == 0, done.stderr
    logdir = finished / "tensorboard"
    assert done.stdout.splitlines() == [
        f"wrote {24 * 4 + 3 * 4} scalars (24 steps, 3 validations) to {logdir}/",
        f"  view them: tensorboard --logdir {logdir}",
    ]
    check_scalars(read_scalars(logdir), events(finished), grad_norm=True)
    again = run_cli("export", finished, "--format", "tensorboard", cwd=workdir)  # replaces its earlier file
    assert again.returncode == 0, again.stderr
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 1
    check_scalars(read_scalars(logdir), events(finished), grad_norm=True)


def test_live_mirror_equals_the_log_and_the_export(mirrored: Path, workdir: Path) -> None:
    log = events(mirrored)
    live = read_scalars(mirrored / "tensorboard")
    check_scalars(live, log, grad_norm=False)
    assert [p[0] for p in live["train/loss"]] == list(range(1, 17))
    # the export into the mirror's folder would double every point: it says so and writes nothing
    refused = run_cli("export", mirrored, "--format", "tensorboard", cwd=workdir)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith(
        f"tuiloop: error: {mirrored / 'tensorboard'} already holds 1 event file(s) that tuiloop export did not write"
    )
    done = run_cli("export", mirrored, "--format", "tensorboard", "-o", workdir / "tb-mirrored", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert read_scalars(workdir / "tb-mirrored") == live


# ---- resumed, crashed and live runs ----------------------------------------------------------------
def test_a_resumed_run_exports_each_step_once_as_redone(resumed: dict[str, Any], workdir: Path) -> None:
    run_dir = resumed["run_dir"]
    log = events(run_dir)
    (restart,) = [e for e in log if e["event"] == "run_started" and e.get("resumed_from")]
    start = restart["start_step"]
    superseded = [s for s in logged_steps(resumed["crashed_log"]) if s > start]
    assert superseded, "the killed session logged no step past its checkpoint"
    rows = check_csv(run_cli("export", run_dir, "-o", "-", cwd=workdir).stdout, log)
    epochs = resumed["epochs"]  # of 8 steps
    assert [int(r["step"]) for r in rows if r["kind"] == "step"] == list(range(1, 8 * epochs + 1))
    assert [r["epoch"] for r in rows if r["kind"] == "validation"] == [str(e) for e in range(1, epochs + 1)]
    redone = [e for e in log[log.index(restart) :] if e["event"] == "train_steps"]
    by_step = {int(r["step"]): float(r["train_loss"]) for r in rows if r["kind"] == "step"}
    assert all(by_step[e["first_step"] + i] == loss for e in redone for i, loss in enumerate(e["losses"]))
    # the mirror: the killed session's file (its last seconds lost), then the resumed one's, complete by itself
    check_scalars(read_scalars(run_dir / "tensorboard"), log, grad_norm=False)
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2


def test_crashed_and_live_runs_export_what_they_logged(resumed: dict[str, Any], workdir: Path) -> None:
    assert resumed["crashed"].returncode == 0, resumed["crashed"].stderr
    check_csv((workdir / "crashed.csv").read_text(encoding="utf-8"), resumed["crashed_log"])
    live = resumed["live"]
    assert live.returncode == 0, live.stderr
    columns, rows = read_csv((workdir / "live.csv").read_text(encoding="utf-8"))
    assert columns[: len(FIXED)] == FIXED
    steps = logged_steps(resumed["crashed_log"])
    assert len(rows) >= 2 and all(
        float(r["train_loss"]) == steps[int(r["step"])]["loss"] for r in rows if r["kind"] == "step"
    )


# ---- errors ----------------------------------------------------------------------------------------
def test_a_missing_run_an_unknown_format_and_o_dash_for_tensorboard_are_one_line_errors(
    finished: Path, workdir: Path
) -> None:
    missing = run_cli("export", "no-such-run", cwd=workdir)
    assert missing.returncode == 2 and missing.stderr.startswith("tuiloop: error: no run directory 'no-such-run'")
    bad = run_cli("export", finished, "--format", "parquet", cwd=workdir)
    assert bad.returncode == 2
    assert (
        bad.stderr.strip()
        == "tuiloop: error: unknown export format 'parquet': use --format csv or --format tensorboard."
    )
    close = run_cli("export", finished, "--format", "tensorbord", cwd=workdir)
    assert close.returncode == 2 and close.stderr.strip().endswith("Did you mean 'tensorboard'?")
    stdout = run_cli("export", finished, "--format", "tensorboard", "-o", "-", cwd=workdir)
    assert stdout.returncode == 2 and "give -o a folder" in stdout.stderr


def test_without_tensorboardx_the_export_and_the_spec_option_say_how_to_install_it(
    finished: Path, workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tensorboardX cannot be imported: the export and the spec option say how to install it; CSV still works."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "tensorboardX.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'tensorboardX'\", name='tensorboardX')\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")])))
    done = run_cli("export", finished, "--format", "tensorboard", "-o", tmp_path / "tb", cwd=workdir)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("tuiloop: error: writing TensorBoard event files needs tensorboardX")
    assert (
        "pip install 'tuiloop[tensorboard]'" in done.stderr and f"tuiloop export {finished} --format csv" in done.stderr
    )
    assert not (tmp_path / "tb").exists()
    assert run_cli("export", finished, "-o", tmp_path / "x.csv", cwd=workdir).returncode == 0
    shutil.copy(FIXTURES / "tiny.py", tmp_path / "tiny.py")
    spec = write_spec(tmp_path, run={"tensorboard": True})
    for mode in ("--headless", "--detach"):
        run = run_cli("run", spec, mode, cwd=tmp_path)
        assert run.returncode == 2, run.stdout
        assert run.stderr.startswith(
            f"tuiloop: error: {spec}, [run] tensorboard: mirroring the run to TensorBoard needs tensorboardX"
        ), run.stderr
        assert "pip install 'tuiloop[tensorboard]'" in run.stderr and "or set tensorboard = false" in run.stderr
        assert not (tmp_path / "runs").exists()  # refused before any run directory was made


def test_the_mirror_turned_on_when_resuming_holds_the_whole_run(finished: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / finished.name
    shutil.copytree(finished, run_dir, ignore=shutil.ignore_patterns("tensorboard", "export.csv"))
    done = run_cli(
        "run", "--resume", run_dir, "--headless", "--set", "run.epochs=4", "--set", "run.tensorboard=true", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "run.tensorboard" in done.stdout
    scalars = read_scalars(run_dir / "tensorboard")
    check_scalars(scalars, events(run_dir), grad_norm=True)
    assert [p[0] for p in scalars["train/loss"]] == list(range(1, 33))


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_export_typed_in_a_real_terminal_says_what_it_wrote_in_both_formats(
    finished: Path, workdir: Path, tmux: Tmux
) -> None:
    """Typed at a shell prompt in a terminal: both formats say what they wrote, and the files read
    back (CSV with the csv module, the event files with tensorboardX's own records)."""
    term = tmux.new("export", "bash --norc --noprofile", width=120, height=40)
    tmux.send(term, f"{TUILOOP} export plain -o typed.csv; echo '[csv '$?']'", "Enter")
    screen = tmux.wait_for(term, r"\[csv 0\]", 30)
    assert "wrote 27 rows (24 steps, 3 validations) to typed.csv" in screen, screen
    check_csv((workdir / "typed.csv").read_text(encoding="utf-8"), events(finished))
    tmux.send(term, f"{TUILOOP} export plain --format tensorboard -o typed-tb; echo '[tb '$?']'", "Enter")
    screen = tmux.wait_for(term, r"\[tb 0\]", 30)
    assert "view them: tensorboard --logdir typed-tb" in screen, screen
    check_scalars(read_scalars(workdir / "typed-tb"), events(finished), grad_norm=True)
