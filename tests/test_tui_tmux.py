"""The real ``tuiloop run demos/digits.toml`` in a real terminal (tmux): what is on the screen,
what the keys do, resizing, and a terminal left sane after a crash."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import DEMOS
from runs_support import TUILOOP, Tmux, summary, wait_until

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")

DIGITS = DEMOS / "digits.toml"


def lines_of(screen: str) -> list[str]:
    return screen.rstrip("\n").split("\n")


def laid_out(screen: str, width: int, height: int) -> str | None:
    """The screen if the monitor has drawn it for this size: title on top, footer on the last row."""
    rows = lines_of(screen)
    if len(rows) == height and all(len(r) <= width for r in rows) and "p Pause" in rows[-1] and "tuiloop" in rows[0]:
        return screen
    return None


def only_run(out_dir: Path) -> Path:
    return wait_until(
        lambda: next((p for p in out_dir.glob("*") if (p / "run.json").is_file()), None), 60, "the run directory"
    )


def test_run_digits_live_keys_and_resize_in_a_real_terminal(workdir: Path, tmux: Tmux) -> None:
    out = workdir / "runs"
    cmd = f"{TUILOOP} run {DIGITS} --set run.out_dir={out} --set run.epochs=5000 --set early_stopping.patience=5000"
    term = tmux.new("digits", cmd, width=80, height=24)
    needles = (
        "epoch",
        "samples/s",
        "ETA",
        "Loss",
        "━ train",
        "Metrics",
        "val_loss",
        "Early stopping",
        "Learning rate",
        "lr ",
        "Log",
        "saved best",
        "p Pause",
        "s Save",
        "q Stop",
        "d Detach",
    )
    tmux.wait_for(term, r"val_acc\s+\d\.\d{4}", 90)  # a validation is on screen
    # A capture can catch a frame half-written; the full picture must follow within a few frames.
    last = ""

    def complete() -> str | None:
        nonlocal last
        last = tmux.screen(term)
        return last if all(n in last for n in needles) else None

    try:
        screen = wait_until(complete, 10, "every part of the monitor on screen")
    except AssertionError:
        missing = [n for n in needles if n not in last]
        raise AssertionError(f"{missing} missing from:\n{last}") from None
    run_dir = only_run(out)
    rows = lines_of(screen)
    assert rows[0].lstrip().startswith("tuiloop") and "RUNNING" in rows[0] and "digits-mlp" in rows[0]
    assert "Traceback" not in screen

    tmux.send(term, "p")
    tmux.wait_for(term, r"PAUSED.*\n.*ETA \(paused\)", 20)
    tmux.send(term, "p")
    tmux.wait_for(term, r"RUNNING", 20)

    # a larger terminal, then back to 80x24: the layout follows, nothing is left over
    tmux.resize(term, 150, 45)
    big = wait_until(lambda: laid_out(tmux.screen(term), 150, 45), 20, "the 150x45 layout")
    assert re.search(r"─Loss─+ ─Metrics", big) and "Early stopping" in big
    tmux.resize(term, 80, 24)
    small = wait_until(lambda: laid_out(tmux.screen(term), 80, 24), 20, "the 80x24 layout again")
    assert re.search(r"─Loss─+ ─Metrics", small) and "Early stopping" in small

    # q asks first; y stops the run gracefully and the monitor closes with the terminal restored
    tmux.send(term, "q")
    tmux.wait_for(term, r"Stop the run\?", 10)
    tmux.send(term, "y")
    done = tmux.wait_for(term, r"\[exit 0\]", 60)
    assert re.search(r"digits-mlp: stopped \(stopped by request\) after \d+ epochs", done)
    assert f"run directory: {run_dir}" in done.replace("\n", "")
    s = summary(run_dir)
    assert s is not None and s["status"] == "stopped" and (run_dir / "checkpoints" / "last.pt").is_file()


def test_a_run_that_ends_by_itself_stays_on_screen_until_q(workdir: Path, tmux: Tmux) -> None:
    out = workdir / "runs"
    term = tmux.new("ends", f"{TUILOOP} run {DIGITS} --set run.out_dir={out} --set run.epochs=6", width=100, height=30)
    tmux.wait_for(term, r"COMPLETED", 90)
    # the footer follows the title within a frame or two: wait for the whole final screen
    tmux.wait_for(term, r"(?s)completed \(6 epochs done\).*q Leave", 10)
    assert "Pause" not in tmux.screen(term)
    wait_until(lambda: summary(only_run(out)), 20, "the summary")
    assert "[exit" not in tmux.screen(term)  # still open, showing the final state
    tmux.send(term, "q")
    done = tmux.wait_for(term, r"\[exit 0\]", 20)
    assert "digits-mlp: completed (6 epochs done) after 6 epochs" in done


def test_a_crash_exits_1_prints_the_traceback_and_leaves_the_terminal_sane(workdir: Path, tmux: Tmux) -> None:
    (workdir / "boom.py").write_text(
        "import torch\n"
        "class Boom(torch.nn.Linear):\n"
        "    def forward(self, x):\n"
        "        raise RuntimeError('the model blew up')\n"
    )
    (workdir / "boom.toml").write_text(
        f'[run]\nname = "boom"\nout_dir = "{workdir / "runs"}"\ndevice = "cpu"\nepochs = 3\n'
        '[model]\ntarget = "boom.py:Boom"\nin_features = 4\nout_features = 3\n'
        '[data]\ntarget = "tiny.py:classes"\nbatch_size = 16\n[loss]\ntarget = "CrossEntropyLoss"\n[optimizer]\ntarget = "Adam"\n'
    )
    term = tmux.new("crash", "bash --norc --noprofile", width=100, height=30)
    tmux.send(term, f"PS1='$ '; {TUILOOP} run boom.toml; echo \"[code $?]\"", "Enter")
    screen = tmux.wait_for(
        term, r"FAILED[\s\S]*boom\.py:4 in forward", 90
    )  # the error panel drawn too, not only the title
    assert "RuntimeError: the model blew up" in screen
    tmux.send(term, "q")
    done = tmux.wait_for(term, r"\[code 1\]", 20)
    assert "Traceback (most recent call last)" in done and "RuntimeError: the model blew up" in done
    tmux.send(
        term,
        "clear; printf 'tty:%s:\\n' \"$(stty -a | tr ' ;' '\\n\\n' | grep -xE -- '-?(icanon|echo)' | tr '\\n' ' ')\"",
        "Enter",
    )
    sane = tmux.wait_for(term, r"tty:[^%\n]*:", 10)
    assert "tty:icanon echo :" in sane, sane  # cooked mode with echo: the monitor restored the terminal
