"""A resume from a last.pt that is not the checkpoint the run saved: an empty file, random bytes,
a pickle of another shape, a link to another file, a flipped bit. Each is refused with exit
status 2 and one paragraph naming the checkpoint and another one to resume from, and the run
directory is left exactly as it was (every file's bytes and mtime). Each save's SHA-256 is in
the event log; following the fix (another checkpoint copied over last.pt) resumes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import load_ckpt, only_run, run_cli, write_spec
from runs_support import events, summary


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished run of 2 epochs with best.pt, last.pt and epoch-NNNN.pt (shared: each test copies it)."""
    workdir = tmp_path_factory.mktemp("corrupt")
    shutil.copy(Path(__file__).parent / "fixtures" / "tiny.py", workdir / "tiny.py")
    spec = write_spec(workdir, run={"epochs": 2}, checkpoint={"best": True, "last": True, "every_n_epochs": 1})
    done = run_cli("run", spec, "--headless", cwd=workdir)
    assert done.returncode == 0, done.stderr
    return only_run(workdir / "runs")


def copy_run(finished: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "runs" / finished.name
    shutil.copytree(finished, run_dir, symlinks=True)
    shutil.copy(finished.parent.parent / "tiny.py", tmp_path / "tiny.py")
    return run_dir


def snapshot(run_dir: Path) -> dict[str, tuple[str, int]]:
    """Every entry of the run directory: its bytes' hash (a link: its target) and its mtime."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        st = path.lstat()
        content = os.readlink(path).encode() if path.is_symlink() else b"" if path.is_dir() else path.read_bytes()
        out[str(path.relative_to(run_dir))] = (hashlib.sha256(content).hexdigest(), st.st_mtime_ns)
    return out


def _flip_a_bit(last: Path) -> None:
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0x01
    last.write_bytes(bytes(data))
    load_ckpt(last)  # it still loads: without the recorded SHA-256 this damage would go unseen


def _symlink(last: Path) -> None:
    last.unlink()
    last.symlink_to(last.parent / "epoch-0001.pt")


def _wrong_shape(last: Path) -> None:
    import torch

    torch.save([1, 2, 3], last)


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "zero bytes": (lambda last: last.write_bytes(b""), "it is empty"),
    "random bytes": (lambda last: last.write_bytes(os.urandom(4096)), "no checkpoint file at all"),
    "a pickle of the wrong shape": (_wrong_shape, "it holds a list, not the dict a checkpoint is"),
    "a link to another file": (_symlink, "is a symbolic link (to "),
    "a flipped bit": (_flip_a_bit, "so it was changed or damaged since"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_last_pt_is_refused_and_the_run_left_as_it_was(finished: Path, tmp_path: Path, damage: str) -> None:
    run_dir = copy_run(finished, tmp_path)
    breaker, said = DAMAGE[damage]
    breaker(run_dir / "checkpoints" / "last.pt")
    before = snapshot(run_dir)
    done = run_cli("run", "--resume", run_dir, "--headless", "--set", "run.epochs=3", cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    err = done.stderr.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err  # one paragraph
    assert err.startswith(f"tuiloop: error: --resume {run_dir}: checkpoints/last.pt "), err
    assert said in err, err
    if damage != "a link to another file":
        assert "SHA-256" in err, err
    # the fix names a checkpoint that is there, and the way to use it
    assert f"cp {run_dir}/checkpoints/" in err and "then resume again" in err, err
    assert snapshot(run_dir) == before, "a refused resume changed the run directory"


def test_a_damaged_last_pt_of_a_run_whose_log_has_no_hashes_is_refused_too(finished: Path, tmp_path: Path) -> None:
    """A run logged by an older tuiloop: nothing to check the bytes against, yet no traceback."""
    run_dir = copy_run(finished, tmp_path)
    log = run_dir / "events.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    log.write_text("".join(json.dumps({k: v for k, v in e.items() if k != "sha256"}) + "\n" for e in lines))
    (run_dir / "digest.json").unlink()
    _wrong_shape(run_dir / "checkpoints" / "last.pt")
    before = snapshot(run_dir)
    done = run_cli("run", "--resume", run_dir, "--headless", cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert "checkpoints/last.pt cannot be resumed from: it holds a list" in done.stderr, done.stderr
    assert snapshot(run_dir) == before


def test_each_save_records_its_sha256_and_another_checkpoint_copied_over_last_pt_resumes(
    finished: Path, tmp_path: Path
) -> None:
    saves = [e for e in events(finished) if e["event"] == "checkpoint"]
    assert {e["path"] for e in saves} == {
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "checkpoints/epoch-0001.pt",
        "checkpoints/epoch-0002.pt",
    }
    for name in ("best.pt", "last.pt", "epoch-0002.pt"):  # the last save of each is the file there
        last_save = [e for e in saves if e["path"] == f"checkpoints/{name}"][-1]
        assert last_save["sha256"] == hashlib.sha256((finished / "checkpoints" / name).read_bytes()).hexdigest()

    # The fix the refusal gives: another checkpoint of the run over last.pt (here epoch 1's).
    run_dir = copy_run(finished, tmp_path)
    shutil.copy(run_dir / "checkpoints" / "epoch-0001.pt", run_dir / "checkpoints" / "last.pt")
    done = run_cli("run", "--resume", run_dir, "--headless", "--set", "run.epochs=3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    s = summary(run_dir)
    assert s is not None and s["status"] == "completed" and s["epochs_done"] == 3
    started = [e for e in events(run_dir) if e["event"] == "run_started"]
    assert started[-1]["start_epoch"] == 1, "it went on from the checkpoint copied in"
