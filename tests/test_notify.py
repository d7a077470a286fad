"""Being told (``[notify]``), as a user meets it: a command of theirs that receives the event as
JSON on a real run, Apprise's ``json://`` posting to a server on loopback, the user's
config.toml applied to every run and overridden by a spec, a failing command logged once
while the run goes on, and the mistakes said before a run starts."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, write_spec
from runs_support import events, summary

from tuiloop.spec import SpecError, load_spec
from tuiloop.spec.userconfig import config_path, notify_settings

# A notify command of the user's: appends what it got (stdin, and the TUILOOP_* variables) as one JSON line.
RECORDER = """\
import json, os, sys
got = {"stdin": json.loads(sys.stdin.read()), "env": {k: v for k, v in os.environ.items() if k.startswith("TUILOOP_")}}
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(got) + "\\n")
"""


def recorder(folder: Path, name: str = "told.jsonl") -> tuple[str, Path]:
    """A notify command line and the file it appends to."""
    (folder / "recorder.py").write_text(RECORDER)
    return f"{sys.executable} {folder / 'recorder.py'} {folder / name}", folder / name


def told(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def only_run(folder: Path) -> Path:
    (run_dir,) = [p for p in (folder / "runs").iterdir() if (p / "run.json").is_file()]
    return run_dir


def headless(folder: Path, spec: Path) -> Path:
    done = run_cli("run", spec, "--headless", cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    return only_run(folder)


def test_a_notify_command_receives_each_event_as_json_with_the_runs_variables(workdir: Path) -> None:
    command, out = recorder(workdir)
    run_dir = headless(workdir, write_spec(workdir, notify={"on": ["finished", "best"], "command": command}))

    got = told(out)
    bests = [e for e in events(run_dir) if e["event"] == "validated" and e["is_best"]]
    assert [g["stdin"]["event"] for g in got] == ["best"] * len(bests) + ["finished"]
    finished = got[-1]
    s = summary(run_dir)
    assert s is not None
    assert finished["stdin"]["status"] == "completed" == s["status"]
    assert finished["stdin"]["run_dir"] == str(run_dir) and finished["stdin"]["name"] == "tiny"
    message = finished["stdin"]["message"]  # status, epochs done, the best metric, the time
    assert message.startswith("completed (3 epochs done) after 3 epochs, ")
    assert f"best val_loss {s['best_value']:.4f} at epoch {s['best_epoch']}" in message
    assert finished["stdin"]["details"]["event"] == "finished" and finished["stdin"]["details"]["epochs_done"] == 3
    assert finished["env"]["TUILOOP_EVENT"] == "finished" and finished["env"]["TUILOOP_STATUS"] == "completed"
    assert finished["env"]["TUILOOP_RUN_DIR"] == str(run_dir) and finished["env"]["TUILOOP_NAME"] == "tiny"
    assert (
        finished["env"]["TUILOOP_MESSAGE"] == message and finished["env"]["TUILOOP_TITLE"] == "tuiloop: tiny finished"
    )
    assert got[0]["stdin"]["message"].startswith("new best val_loss ")


def test_a_failed_run_and_a_nan_loss_are_told_with_their_error(workdir: Path) -> None:
    command, out = recorder(workdir)
    nan = {"target": "tiny.py:with_nan", "shuffle": False}
    spec = write_spec(
        workdir,
        notify={"command": command},  # the default events: finished, failed, stalled
        data=nan,
        model={"out_features": 1},
        loss={"target": "MSELoss"},
    )
    done = run_cli("run", spec, "--headless", cwd=workdir)
    assert done.returncode == 1
    (got,) = told(out)
    assert (got["stdin"]["event"], got["stdin"]["status"]) == ("failed", "failed")
    assert "the training loss became nan at step" in got["stdin"]["message"]

    command, out = recorder(workdir, "nan.jsonl")  # "nan" named: the same failure is told as nan, once
    spec = write_spec(
        workdir, notify={"on": ["failed", "nan"], "command": command}, data=nan, model={"out_features": 1},
        loss={"target": "MSELoss"},
    )  # fmt: skip
    assert run_cli("run", spec, "--headless", cwd=workdir).returncode == 1
    assert [g["stdin"]["event"] for g in told(out)] == ["nan"]


class Hook(BaseHTTPRequestHandler):
    """A web hook on loopback that keeps what is posted to it."""

    posted: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Hook.posted.append({"path": self.path, "json": json.loads(body)})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[str]:
    """The address of a local HTTP server (in a thread), for Apprise's json:// scheme."""
    Hook.posted = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_apprise_posts_the_finished_notice_to_a_json_hook_on_loopback(workdir: Path, hook: str) -> None:
    pytest.importorskip("apprise")
    run_dir = headless(workdir, write_spec(workdir, notify={"urls": [f"json://{hook}/tuiloop"]}))
    (post,) = Hook.posted
    assert post["path"] == "/tuiloop"
    assert post["json"]["title"] == "tuiloop: tiny finished"
    assert post["json"]["message"].startswith("completed (3 epochs done) after 3 epochs, ")
    assert post["json"]["type"] == "success"
    assert not [e for e in events(run_dir) if e["event"] == "message" and "notify" in e["text"]]


def test_the_users_config_tells_every_run_and_a_specs_section_overrides_it(workdir: Path) -> None:
    command, out = recorder(workdir)
    config = config_path()  # the tests' own XDG_CONFIG_HOME (conftest)
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[notify]\non = ["finished"]\ncommand = "{command}"\n')
    try:
        headless(workdir, write_spec(workdir))  # no [notify] in the spec: the config's
        assert [g["stdin"]["event"] for g in told(out)] == ["finished"]

        (workdir / "runs").rename(workdir / "runs-1")
        headless(workdir, write_spec(workdir, notify={"on": ["failed"]}))  # the spec's on, the config's command
        assert len(told(out)) == 1, "a completed run is not told when the spec names only failed"

        (workdir / "runs").rename(workdir / "runs-2")
        other, elsewhere = recorder(workdir, "spec.jsonl")
        headless(workdir, write_spec(workdir, notify={"command": other}))
        assert len(told(out)) == 1 and [g["stdin"]["event"] for g in told(elsewhere)] == ["finished"]

        config.write_text('[notify]\non = ["finish"]\n')  # a mistake in the config: said before the run starts
        done = run_cli("run", write_spec(workdir), "--headless", cwd=workdir)
        assert done.returncode == 2
        assert (
            f"{config}, [notify] on: 'finish' is not an event a notice tells. Did you mean 'finished'?" in done.stderr
        )
    finally:
        config.unlink()


def test_a_failing_command_is_logged_once_and_the_run_completes(workdir: Path) -> None:
    spec = write_spec(workdir, notify={"on": ["best", "finished"], "command": "echo no such service >&2; exit 3"})
    run_dir = headless(workdir, spec)
    s = summary(run_dir)
    assert s is not None and s["status"] == "completed"
    warnings = [e["text"] for e in events(run_dir) if e["event"] == "message" and "notify" in e["text"]]
    assert warnings == [
        "the notify command (echo no such service >&2; exit 3) failed: exit status 3 (no such service); "
        "the run goes on (later failures are not logged)"
    ]
    assert sum(e["event"] == "validated" and e["is_best"] for e in events(run_dir)) >= 1  # so at least 2 failed


def test_a_hanging_command_is_ended_at_its_timeout(workdir: Path) -> None:
    spec = write_spec(workdir, run={"epochs": 1}, notify={"command": "sleep 30", "timeout": 0.5})
    done = run_cli("run", spec, "--headless", cwd=workdir, timeout=20)
    assert done.returncode == 0
    (warning,) = [e["text"] for e in events(only_run(workdir)) if e["event"] == "message" and "notify" in e["text"]]
    assert "took longer than 0.5s and was ended" in warning


def test_urls_without_apprise_are_a_spec_error_that_says_what_to_install(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)  # as if it were not installed
    spec = write_spec(workdir, notify={"urls": ["ntfy://my-topic"]})
    with pytest.raises(SpecError) as e:
        load_spec(spec)
    assert "[notify] urls: sending to URLs needs Apprise, which is not installed" in str(e.value)
    assert "pip install 'tuiloop[notify]'" in str(e.value)


def test_notify_settings_merge_key_by_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    assert notify_settings(None, config) is None
    config.write_text('[notify]\ncommand = "true"\nurls = []\n')
    merged = notify_settings({"on": ["best"]}, config)
    assert merged is not None and (merged.on, merged.command, merged.timeout) == (["best"], "true", 10.0)
    config.write_text('[notfy]\ncommand = "true"\n')
    with pytest.raises(SpecError, match=r"'notfy' is not a section of tuiloop's config file. Did you mean 'notify'\?"):
        notify_settings(None, config)


def test_a_stall_is_told_with_the_line_the_run_waits_in(workdir: Path) -> None:
    command, out = recorder(workdir)
    spec = write_spec(
        workdir,
        run={"epochs": 1, "stall_after": 1.0},
        data={"target": "tiny.py:stalling_classes", "marker": str(workdir / "stuck"), "after": 70, "hang": 2.5},
        notify={"command": command},
    )
    headless(workdir, spec)
    stalled, finished = told(out)
    assert (stalled["stdin"]["event"], stalled["env"]["TUILOOP_STATUS"]) == ("stalled", "stalled")
    assert "(stalled after 1.0s), at step 4: tiny.py:" in stalled["stdin"]["message"]
    assert "in __getitem__" in stalled["stdin"]["message"] and stalled["stdin"]["details"]["stack"]
    assert finished["stdin"]["event"] == "finished"
