"""The monitor's ``:`` prompt typed in a real terminal (tmux) on a live run: a bad key refused at
once with a did-you-mean, then ``optimizer.lr`` changed from the next step."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from runs_support import TUILOOP, Tmux, events, wait_until
from test_tui_steer_tmux import only_run, steady_spec

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


def _echoed(tmux: Tmux, term: str) -> bool:
    try:
        tmux.wait_for(term, r"optimizer\.lr=0\.0001(?!\S)", 5)
    except AssertionError:
        return False
    return True


def test_the_colon_prompt_refuses_a_bad_key_then_changes_the_learning_rate_of_a_live_run(
    workdir: Path, tmux: Tmux
) -> None:
    term = tmux.new("prompt", f"{TUILOOP} run {steady_spec(workdir)}", width=120, height=40)
    tmux.wait_for(term, r"val_acc\s+\d\.\d{4}", 90)
    tmux.send(term, ":")
    tmux.wait_for(term, r"KEY=VALUE \.\.\. as tuiloop ctl RUN set takes them", 10)
    tmux.send(term, "-l", "optimizer.lr=1e-4 run.epohcs=3")
    tmux.send(term, "Enter")
    tmux.wait_for(term, r"set, \[run\] epohcs: 'epohcs' is not a key of \[run\]\. Did you mean 'epochs'\?", 10)
    run_dir = only_run(workdir / "runs")
    assert not [e for e in events(run_dir) if e["event"] == "setting_changed"], "nothing was sent"
    tmux.send(term, "C-u")  # the line cleared, as in a shell
    for _ in range(3):  # KNOWN FLAKE (about 1 in 4 here): keys typed right after C-u are sometimes not echoed
        tmux.send(term, "-l", "optimizer.lr=0.0001")
        if re.search(r"optimizer\.lr=0\.0001(?!\S)", tmux.screen(term)) or _echoed(tmux, term):
            break
        tmux.send(term, "C-u")
    tmux.wait_for(term, r"optimizer\.lr=0\.0001(?!\S)", 10)  # typed in full (the placeholder reads 1e-4)
    tmux.send(term, "Enter")
    tmux.wait_for(term, r"set optimizer\.lr = 0\.0001: from the next step", 10)
    tmux.wait_for(term, r"learning rate 0\.001 -> 0\.0001 \(ctl set, step \d+\)", 30)
    (changed,) = [e for e in events(run_dir) if e["event"] == "setting_changed"]
    assert (changed["key"], changed["old"], changed["new"]) == ("optimizer.lr", 0.001, 0.0001)
    wait_until(
        lambda: any(e["event"] == "train_steps" and e["first_step"] > changed["step"] for e in events(run_dir)),
        30,
        "steps after the change",
    )
    after = [e for e in events(run_dir) if e["event"] == "train_steps" and e["first_step"] > changed["step"]]
    assert all(e["lr"] == 0.0001 for e in after), "from the next step on"
    tmux.send(term, "q")
    tmux.wait_for(term, r"Stop the run\?", 10)
    tmux.send(term, "y")
    tmux.wait_for(term, r"\[exit 0\]", 60)
