"""``tuiloop.Trainer`` from Python with a run directory: a full run directory that ``show`` opens
and whose control socket steers the run; a failure while it sets up still ends with a summary."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import tiny
import torch
from conftest import run_cli
from runs_support import answers, wait_until
from torch import nn

import tuiloop
from tuiloop.engine.events import Event, RunStarted
from tuiloop.rundir.control import send_command
from tuiloop.rundir.eventlog import read_events
from tuiloop.rundir.layout import read_json
from tuiloop.rundir.lock import is_locked
from tuiloop.rundir.state import run_state

CPU = torch.device("cpu")


def api_trainer(run_dir: Path | None, epochs: int = 2, delay: float = 0.0) -> tuiloop.Trainer:
    """The README's Python example: tuiloop.Trainer on objects."""
    torch.manual_seed(0)
    train_set, val_set = tiny.classes()
    model = tiny.MLP(delay=delay)
    return tuiloop.Trainer(
        model,
        tuiloop.Batches(train_set, CPU, batch_size=16, shuffle=True),
        tuiloop.Batches(val_set, CPU, batch_size=64, shuffle=False),
        nn.CrossEntropyLoss(),
        torch.optim.Adam(model.parameters(), lr=0.01),
        options=tuiloop.Options(epochs=epochs, run_name="from-python"),
        run_dir=run_dir,
    )


def test_a_python_run_with_a_run_dir_is_a_full_run_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "mine"
    finished = api_trainer(run_dir).run()
    assert (finished.status, finished.epochs_done, finished.step) == ("completed", 2, 16)
    assert {p.name for p in run_dir.iterdir()} >= {
        "run.json",
        "run.lock",
        "events.jsonl",
        "summary.json",
        "checkpoints",
    }
    assert not (run_dir / "control.sock").exists() and not is_locked(run_dir)
    info = read_json(run_dir / "run.json")
    assert info is not None and info["name"] == "from-python" and "versions" in info
    assert read_json(run_dir / "summary.json")["status"] == "completed"  # type: ignore[index]
    assert run_state(run_dir).state == "finished"
    events, tail = read_events(run_dir)
    assert events[0].kind == "run_started" and events[-1].kind == "finished" and tail.skipped == 0
    shown = run_cli("show", run_dir, cwd=tmp_path)
    assert shown.returncode == 0 and "run from-python started" in shown.stdout and "finished: completed" in shown.stdout
    listed = run_cli("ls", tmp_path / "runs", cwd=tmp_path)
    assert "mine" in listed.stdout and "finished" in listed.stdout and "2/2" in listed.stdout


def test_a_python_run_obeys_its_control_socket_while_it_trains(tmp_path: Path) -> None:
    """What ``tuiloop attach RUN_DIR`` and its keys use: pause, save and stop reach the loop."""
    run_dir = tmp_path / "live"
    trainer = api_trainer(run_dir, epochs=500, delay=0.01)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(finished=trainer.run()), daemon=True)
    thread.start()
    try:
        wait_until(lambda: answers(run_dir), 60, "the run's control socket")
        assert run_state(run_dir).state == "running"
        assert send_command(run_dir, "save") == {"ok": True}
        wait_until(lambda: list((run_dir / "checkpoints").glob("manual-step*.pt")), 30, "the manual checkpoint")
        assert send_command(run_dir, "stop") == {"ok": True}
        thread.join(60)
    finally:
        if thread.is_alive():
            trainer.commands.send("stop")
            thread.join(30)
    assert result["finished"].status == "stopped"
    assert read_json(run_dir / "summary.json")["status"] == "stopped"  # type: ignore[index]
    assert (run_dir / "checkpoints" / "last.pt").is_file() and not is_locked(run_dir)


def test_a_failure_while_setting_up_the_run_directory_ends_with_a_summary(tmp_path: Path) -> None:
    """The control socket cannot be made (its path is taken by a folder): failed, summarized, all closed."""
    run_dir = tmp_path / "blocked"
    (run_dir / "control.sock").mkdir(parents=True)
    finished = api_trainer(run_dir).run()
    assert (finished.status, finished.reason) == ("failed", "setup error")
    events, _ = read_events(run_dir)
    assert [e.kind for e in events] == ["failed", "finished"] and "IsADirectoryError" in events[0].error
    assert read_json(run_dir / "summary.json")["status"] == "failed"  # type: ignore[index]
    assert not is_locked(run_dir), "the lock is released"
    assert run_state(run_dir).state == "failed"


def test_a_failure_in_the_start_announcement_ends_with_a_summary_and_closes_everything(tmp_path: Path) -> None:
    run_dir = tmp_path / "announce"
    trainer = api_trainer(run_dir)

    def broken_sink(event: Event) -> None:
        if isinstance(event, RunStarted):
            raise RuntimeError("a sink that cannot take the start")

    trainer.subscribe(broken_sink)
    finished = trainer.run()
    assert (finished.status, finished.reason) == ("failed", "setup error")
    events, _ = read_events(run_dir)
    assert (
        events[-2].kind == "failed"
        and "a sink that cannot take the start" in events[-2].error
        and events[-1].kind == "finished"
    )
    assert read_json(run_dir / "summary.json")["status"] == "failed"  # type: ignore[index]
    assert not (run_dir / "control.sock").exists() and not is_locked(run_dir)
    # the same Trainer runs again into the same directory once the problem is gone
    trainer.sinks.remove(broken_sink)
    assert trainer.run().status == "completed"
    assert read_json(run_dir / "summary.json")["status"] == "completed"  # type: ignore[index]


def test_a_live_run_directory_is_not_used_twice(tmp_path: Path) -> None:
    from tuiloop.rundir.lock import RunLock

    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    lock = RunLock.acquire(run_dir)
    try:
        with pytest.raises(RuntimeError, match="is a live run"):
            api_trainer(run_dir).run()
    finally:
        lock.release()
