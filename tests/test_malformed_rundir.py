"""Run directories in any shape a damaged disk, an editor or another user leaves them: run.json,
summary.json and events.jsonl of the wrong types, nested too deeply, full of NUL bytes, with
numbers too large to be counts; and runs of another user. ``ls``, ``show``, ``export`` and
``compare`` (and the monitor's model) never crash on them: they skip what they cannot read, say
so and count it, and another user's run gets one paragraph, not a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import only_run, run_cli, write_spec

DEEP = "[" * 100_000 + "]" * 100_000  # deeper than any JSON reader's recursion


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished run of 3 epochs (shared: each case damages a copy)."""
    workdir = tmp_path_factory.mktemp("malformed")
    shutil.copy(Path(__file__).parent / "fixtures" / "tiny.py", workdir / "tiny.py")
    done = run_cli("run", write_spec(workdir), "--headless", cwd=workdir)
    assert done.returncode == 0, done.stderr
    return only_run(workdir / "runs")


def _events(change: Callable[[list[str]], list[str]], keep_summary: bool = True) -> Callable[[Path], None]:
    def damage(run_dir: Path) -> None:
        log = run_dir / "events.jsonl"
        log.write_text("\n".join(change(log.read_text().splitlines())) + "\n")
        (run_dir / "digest.json").unlink()
        if not keep_summary:  # a crashed run: ls reads how far it got from the log itself
            (run_dir / "summary.json").unlink()

    return damage


def _field(kind: str, key: str, value: object) -> Callable[[list[str]], list[str]]:
    def change(lines: list[str]) -> list[str]:
        out = []
        for line in lines:
            event = json.loads(line)
            if event["event"] == kind:
                line = json.dumps({**event, key: value})
            out.append(line)
        return out

    return change


def _write(name: str, data: str | bytes) -> Callable[[Path], None]:
    return lambda run_dir: (
        (run_dir / name).write_bytes(data) if isinstance(data, bytes) else (run_dir / name).write_text(data)
    )


SUMMARY_OF_WRONG_TYPES = {
    "status": 5,
    "reason": [1],
    "epochs": "3",
    "epochs_done": "x",
    "steps": {},
    "monitor": 7,
    "best_value": "abc",
    "best_epoch": 1.5,
    "final_metrics": [],
    "wall_time_s": "s",
    "started": "noon",
    "ended": [],
}
HUGE = {"status": "completed", "epochs": 10**30, "epochs_done": 10**30, "steps": 10**300, "best_value": 1e308}

# case -> (damage, what stderr must say: the file, and what was skipped)
CASES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "run.json a list": (_write("run.json", "[1, 2]"), ["run.json holds a list, not an object"]),
    "run.json nested too deeply": (_write("run.json", DEEP), ["run.json is nested too deeply to read"]),
    "run.json of NUL bytes": (_write("run.json", b"\0" * 4096), ["run.json is not JSON (it holds NUL bytes)"]),
    "run.json of wrong types": (
        _write("run.json", json.dumps({"pid": "x", "host": 5, "started": "y", "session": [1], "name": {}})),
        ["run.json: pid is a string, not an integer", "run.json: host is an integer, not a string"],
    ),
    "summary.json a list": (_write("summary.json", "[]"), ["summary.json holds a list, not an object"]),
    "summary.json of wrong types": (
        _write("summary.json", json.dumps(SUMMARY_OF_WRONG_TYPES)),
        [
            "summary.json: status is an integer, not a string",
            "summary.json: epochs is a string, not an integer",
            "and 9 more",
        ],
    ),
    "summary.json of huge numbers": (
        _write("summary.json", json.dumps(HUGE)),
        ["summary.json: epochs is an integer too large to be a count"],
    ),
    "summary.json of times beyond any clock": (
        _write("summary.json", '{"status": "completed", "wall_time_s": 1e308, "started": -Infinity, "ended": NaN}'),
        ["summary.json: started is -inf, beyond any clock", "summary.json: wall_time_s is 1e+308"],
    ),
    "summary.json nested too deeply": (
        _write("summary.json", '{"status": ' + DEEP + "}"),
        ["summary.json is nested too deeply to read"],
    ),
    "events.jsonl with a NUL region": (
        _events(lambda lines: [*lines[:5], "\0" * 10_000, *lines[5:]]),
        ["skipped 1 line", "line 6: not a JSON object"],
    ),
    "events.jsonl nested too deeply": (
        _events(lambda lines: [*lines[:5], '{"event": "validated", "metrics": ' + DEEP + "}", *lines[5:]]),
        ["skipped 1 line", "line 6: nested too deeply to read"],
    ),
    "validations of wrong types": (
        _events(_field("validated", "metrics", [1, 2])),
        ["skipped 3 line", "'validated' event whose metrics is a list, not a table"],
    ),
    "validations with huge epochs": (
        _events(_field("validated", "epoch", 10**30)),
        ["skipped 3 line", "'validated' event whose epoch is an integer too large to be a count"],
    ),
    "step losses of wrong types": (
        _events(_field("train_steps", "losses", ["a", None, {}])),
        ["'train_steps' event whose losses is a list holding a string, not a number"],
    ),
    "lines that are not objects": (
        _events(lambda lines: [*lines[:3], "[1, 2, 3]", '"text"', "5", "null", *lines[3:]]),
        ["skipped 4 line", "line 4: a JSON list, not an object"],
    ),
    "a crashed run's validations of wrong types": (
        _events(_field("validated", "epoch", "two"), keep_summary=False),
        ["skipped 3 line", "'validated' event whose epoch is a string, not an integer"],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_views_skip_what_they_cannot_read_and_say_so(finished: Path, tmp_path: Path, case: str) -> None:
    runs = tmp_path / "runs"
    run_dir = runs / finished.name
    shutil.copytree(finished, run_dir)
    good = runs / "good-20260101-000000-0000"
    shutil.copytree(finished, good)
    damage, said = CASES[case]
    damage(run_dir)
    commands = {
        "show": ["show", run_dir],
        "export": ["export", run_dir, "-o", "-"],
        "compare": ["compare", run_dir, good],
        "ls": ["ls", runs, "--all"],
    }
    log_only = case.startswith(("events", "validations", "step", "lines", "a crashed"))
    for name, args in commands.items():
        done = run_cli(*args, cwd=tmp_path)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (name, done.stderr)
        if name == "export" and not log_only:
            continue  # export reads the log alone
        if name == "ls" and log_only and "crashed" not in case:
            continue  # ls reads a finished run's summary, not its log
        for part in said if name != "ls" else said[:1]:
            assert part in done.stderr, (name, done.stderr)
        if name == "ls":
            assert finished.name in done.stdout and "could not be read in full" in done.stderr, done.stdout
    # The monitor's model takes whatever the log's reader hands it.
    from tuiloop.rundir.eventlog import read_events
    from tuiloop.tui.model import MonitorModel

    events, tail = read_events(run_dir, from_digest=True)
    MonitorModel().apply_all(events)
    assert (tail.skipped > 0) == log_only


def test_the_epochs_that_can_be_read_are_all_kept(finished: Path, tmp_path: Path) -> None:
    """One damaged validation drops that line alone, counted: the other epochs stay in every view."""
    run_dir = tmp_path / finished.name
    shutil.copytree(finished, run_dir)
    _events(
        lambda lines: [
            _field("validated", "epoch", "two")([line])[0] if '"epoch":2,' in line else line for line in lines
        ]
    )(run_dir)
    done = run_cli("export", run_dir, "-o", "-", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    epochs = {row.split(",")[1] for row in done.stdout.splitlines()[1:] if row.split(",")[0] == "validation"}
    header = done.stdout.splitlines()[0]
    assert header.startswith("kind,epoch"), header
    assert epochs == {"1", "3"}, epochs
    assert "skipped 1 line(s)" in done.stderr and "'validated' event whose epoch is a string" in done.stderr


# ---- another user's run ------------------------------------------------------------------------------
def _user_python(user: str) -> list[str]:
    """A command that runs Python with tuiloop and its dependencies as ``user`` (ours may live in root's home)."""
    import tuiloop

    code = Path(tuiloop.__file__).resolve().parents[1]  # the tuiloop this test runs (the commands it starts do too)
    env = {"PYTHONPATH": os.pathsep.join([str(code), sysconfig.get_paths()["purelib"]]), "HOME": "/"}
    for python in ("/usr/bin/python3", "/usr/local/bin/python3"):
        cmd = ["runuser", "-u", user, "--", "env", *(f"{k}={v}" for k, v in env.items()), python]
        ok = subprocess.run([*cmd, "-c", "import tuiloop.cli.main, numpy"], capture_output=True)
        if ok.returncode == 0:
            return cmd
    pytest.skip(f"no Python that user {user} can run with tuiloop's dependencies")


@pytest.fixture
def stranger() -> Iterator[list[str]]:
    """``python`` as another user (root only)."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root (and runuser) to act as another user")
    yield _user_python("nobody")


def test_another_users_run_gets_one_paragraph_not_a_traceback(finished: Path, stranger: list[str]) -> None:
    top = Path(tempfile.mkdtemp(prefix="tuiloop-theirs-"))
    try:
        os.chmod(top, 0o755)
        runs = top / "runs"
        runs.mkdir(mode=0o755)
        mine, open_dir = runs / finished.name, runs / "open-20260101-000000-0000"
        shutil.copytree(finished, mine)
        shutil.copytree(finished, open_dir)
        os.chmod(runs, 0o755)
        os.chmod(open_dir, 0o755)  # the folder opened, its files still 0600
        for args in (["show", mine], ["export", mine, "-o", "-"], ["compare", mine, open_dir], ["show", open_dir]):
            done = subprocess.run(
                [*stranger, "-m", "tuiloop", *map(str, args)], capture_output=True, text=True, cwd=top, timeout=60
            )
            err = done.stderr.strip()
            assert done.returncode == 2, (args, done.stdout, err)
            assert "Traceback" not in err and err.count("\n") == 0, err
            assert err.startswith("tuiloop: error: permission denied: ") and "belongs to root" in err, err
        done = subprocess.run([*stranger, "-m", "tuiloop", "ls", str(runs)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert "folder" in done.stderr and "you may not read skipped" in done.stderr and mine.name in done.stderr
    finally:
        shutil.rmtree(top, ignore_errors=True)
