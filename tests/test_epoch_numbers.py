"""One convention for epochs everywhere: counted from 1, as the screen shows them.

The best epoch of a run reads the same in events.jsonl, the checkpoint events, best.pt,
summary.json, ``ls``, ``show``, the monitor and the Python API's Finished event.
"""

from __future__ import annotations

from pathlib import Path

from conftest import load_ckpt, run_cli, write_spec

from tuiloop.engine.events import Event, Finished
from tuiloop.rundir.eventlog import read_events
from tuiloop.rundir.layout import read_json
from tuiloop.runner.spec_run import run_spec
from tuiloop.tui.model import MonitorModel
from tuiloop.tui.panels.training import metrics_text


def test_the_best_epoch_is_the_same_number_in_every_file_event_and_view(workdir: Path) -> None:
    seen: list[Event] = []
    code, run_dir = run_spec(write_spec(workdir, run={"epochs": 6}, optimizer={"lr": 0.05}), sinks=[seen.append])
    assert code == 0
    (finished,) = [e for e in seen if isinstance(e, Finished)]
    best = finished.best_epoch
    assert best is not None and 1 <= best <= 6

    events, _ = read_events(run_dir)
    validated = [e for e in events if e.kind == "validated"]
    assert [v.epoch for v in validated] == [1, 2, 3, 4, 5, 6]
    assert [v.epoch for v in validated if v.is_best][-1] == best
    steps = [e for e in events if e.kind == "train_steps"]
    assert steps[0].epoch == 1 and steps[-1].epoch == 6
    best_saves = [e for e in events if e.kind == "checkpoint" and e.tag == "best"]
    assert best_saves[-1].epoch == best, "the save beside the validation names the same epoch"
    assert load_ckpt(run_dir / "checkpoints" / "best.pt")["epoch"] == best

    summary = read_json(run_dir / "summary.json")
    assert summary is not None and summary["best_epoch"] == best and summary["epochs_done"] == 6

    listed = run_cli("ls", run_dir.parent, cwd=workdir)
    assert f"@{best} " in listed.stdout, listed.stdout
    shown = run_cli("show", run_dir, cwd=workdir)
    (finished,) = [line for line in shown.stdout.splitlines() if line.startswith("finished: ")]
    assert f"at epoch {best}" in finished
    assert f"epoch {best}/6" in [line for line in shown.stdout.splitlines() if "*best" in line][-1]

    model = MonitorModel()
    model.apply_all(events)
    assert model.best_epoch == best and model.metrics["val_loss"].best_epoch == best
    row = [line for line in metrics_text(model, 60).plain.splitlines() if line.startswith("val_loss")][0]
    assert row.split()[3] == str(best)
    assert f"at epoch {best}" in model.summary_line()
