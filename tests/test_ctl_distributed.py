"""``tuiloop ctl RUN set`` on a two-process run: rank 0 receives the settings, every rank applies
them at the same step (a rank that did not would train on, or stop, alone, and the run would hang)."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli, write_spec
from runs_support import events, last_step, start_detached, summary, wait_until
from test_distributed import SLOW, TWO, run_processes


def test_settings_set_live_reach_every_rank_running_and_paused(workdir: Path, cleanup: list[Path]) -> None:
    run_dir = start_detached(write_spec(workdir, **SLOW), cwd=workdir, extra=TWO)
    cleanup.append(run_dir)
    wait_until(lambda: last_step(run_dir) >= 8, 90, "some steps")
    done = run_cli("ctl", run_dir, "set", "optimizer.lr=0.005", cwd=workdir)
    assert done.returncode == 0 and done.stdout.startswith("optimizer.lr: 0.01 -> 0.005 from step "), done.stderr
    assert run_cli("ctl", run_dir, "pause", cwd=workdir).returncode == 0
    # while paused, the ranks agree every half second: the change is applied there too
    epochs = [e for e in events(run_dir) if e["event"] == "train_steps"][-1]["epoch"] + 2
    done = run_cli("ctl", run_dir, "set", f"run.epochs={epochs}", cwd=workdir)
    assert done.returncode == 0 and done.stdout.startswith(f"run.epochs: 500 -> {epochs} from step "), done.stderr
    assert run_cli("ctl", run_dir, "resume", cwd=workdir).returncode == 0
    # every rank ends after that epoch: one still training would hang the other in its collectives
    wait_until(lambda: summary(run_dir), 60, "the run to end at its new number of epochs")
    assert (summary(run_dir)["status"], summary(run_dir)["epochs_done"]) == ("completed", epochs)
    wait_until(lambda: not run_processes(run_dir), 30, "every process of the run to end")
    changed = [e for e in events(run_dir) if e["event"] == "setting_changed"]
    assert [(e["key"], e["new"]) for e in changed] == [("optimizer.lr", 0.005), ("run.epochs", epochs)]
    after = [e for e in events(run_dir) if e["event"] == "train_steps" and e["first_step"] > changed[0]["step"]]
    assert after and {e["lr"] for e in after} == {0.005}
