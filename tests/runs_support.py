"""Helpers for the tests of runs outside their terminal: real tmux terminals, background runs."""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import cli_env, run_cli
from markers import drives_a_terminal, starts_processes

from tuiloop.rundir import layout
from tuiloop.rundir.control import ControlError, send_command
from tuiloop.rundir.lock import is_locked

TUILOOP = f"{shlex.quote(sys.executable)} -m tuiloop"


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def read_stderr_until(proc: subprocess.Popen, text: str, timeout: float, what: str) -> str:
    """What ``proc`` wrote to its piped stderr up to and including ``text``; fail the test if it
    does not come within ``timeout``. The rest is left in the pipe for ``proc.communicate()``."""
    assert proc.stderr is not None
    fd, seen = proc.stderr.fileno(), b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; stderr so far: {seen!r}")
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"stderr closed before {what}; it said: {seen!r}")
            seen += chunk
    return seen.decode(errors="replace")


def events(run_dir: Path) -> list[dict[str, Any]]:
    """The run's event log as dicts (a torn last line is skipped)."""
    out = []
    try:
        text = (run_dir / layout.EVENTS).read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def last_step(run_dir: Path) -> int:
    """The global step of the newest training loss in the event log (0 before the first)."""
    steps = [e["first_step"] + len(e["losses"]) - 1 for e in events(run_dir) if e["event"] == "train_steps"]
    return max(steps, default=0)


def summary(run_dir: Path) -> dict[str, Any] | None:
    return layout.read_json(run_dir / layout.SUMMARY)


def ended(run_dir: Path) -> dict[str, Any] | None:
    """The run's summary once the run has closed: summary.json comes before the run closes its
    control socket and lets go of its lock, so a test that looks at what follows waits for this."""
    return None if is_locked(run_dir) else summary(run_dir)


def new_run_dir(out_dir: Path, before: set[Path], timeout: float = 60) -> Path:
    """The run directory that appeared under ``out_dir`` since ``before`` was taken."""

    def find() -> Path | None:
        fresh = [p for p in out_dir.glob("*") if p.is_dir() and p not in before and (p / layout.RUN_INFO).is_file()]
        return fresh[0] if fresh else None

    return wait_until(find, timeout, f"a new run directory under {out_dir}")


def start_detached(spec: Path, *sets: str, cwd: Path, extra: tuple[str, ...] = ()) -> Path:
    """``tuiloop run --detach SPEC``; returns the run directory it printed."""
    args = ["run", "--detach", spec, *[a for s in sets for a in ("--set", s)], *extra]
    done = run_cli(*args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    m = re.search(r"^started (\S+) \(pid (\d+)\)", done.stdout, re.M)
    assert m, done.stdout
    return Path(m.group(1))


def answers(run_dir: Path) -> bool:
    """True if the run's control socket answers a ping."""
    try:
        send_command(run_dir, "ping", timeout=1.0)
    except ControlError:
        return False
    return True


def wait_live(run_dir: Path, timeout: float = 60) -> None:
    """Until the run's control socket answers (the training process is set up)."""
    wait_until(lambda: answers(run_dir) or summary(run_dir), timeout, f"{run_dir.name} to go live")
    assert summary(run_dir) is None or is_locked(run_dir), (
        f"{run_dir.name} ended before the test could act: {summary(run_dir)}"
    )


def run_pid(run_dir: Path) -> int:
    """The training process of a live run (run.json, written by that process)."""
    return int((layout.read_json(run_dir / layout.RUN_INFO) or {}).get("pid") or 0)


def kill_run(run_dir: Path) -> None:
    """SIGKILL a run's training process while it still holds the run (teardown)."""
    pid = run_pid(run_dir)
    if pid and is_locked(run_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@starts_processes  # through tuiloop's own launcher
def start_training_process(spec: Any) -> tuple[Path, subprocess.Popen]:
    """What ``tuiloop run SPEC`` does before it opens the monitor: a locked run directory, a worker."""
    import tuiloop.runner.training_process as training_process
    from tuiloop.runner.spec_run import new_run_dir

    run_dir, lock = new_run_dir(spec)
    try:
        return run_dir, training_process.start(run_dir, lock, spec)
    finally:
        lock.release()


@starts_processes
def resume_training_process(run_dir: Path, spec: Any, session: str = "resumed-session") -> subprocess.Popen:
    """What ``tuiloop run --resume RUN_DIR`` does before it opens the monitor (the resume is checked)."""
    import io

    import tuiloop.runner.training_process as training_process
    from tuiloop.runner.spec_run import lock_for_resume

    lock = lock_for_resume(run_dir)
    try:
        proc = training_process.start(run_dir, lock, spec, resume=True, session=session)
    finally:
        lock.release()
    said = io.StringIO()
    assert training_process.wait_ready(proc, said, run_dir), said.getvalue()
    return proc


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited: a zombie waiting for its parent counts as gone, but not while
    any of its threads is still tearing down (a SIGKILLed process's main thread shows as a zombie
    first, while the other threads still hold its open files, the run's lock among them)."""
    return all(state in (b"Z", b"X") for state in thread_states(pid))


def thread_states(pid: int) -> list[bytes]:
    """The state letter of each live thread of ``pid`` (Linux /proc); none once it has gone."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    states = []
    for task in tasks:
        try:
            stat = (task / "stat").read_bytes()
        except OSError:
            continue  # that thread is gone
        states.append(stat.rsplit(b")", 1)[1].split()[0])
    return states


def run_processes(run_dir: Path) -> list[Any]:
    """What is left of a distributed run: tuiloop's launcher and rank processes of ``run_dir``
    (DataLoader workers share their rank's command line), and every zombie whose parent is a
    tuiloop process: a child that ended and was never waited for is left behind too (its
    command line is gone, so it is found through its parent)."""
    import psutil

    live, tuiloop_pids = [], set()
    for p in psutil.process_iter(["cmdline", "status"]):
        argv = p.info["cmdline"] or []
        if not any(a == "tuiloop" or a.endswith("/tuiloop") for a in argv) or process_gone(p.pid):
            continue  # `python -m tuiloop ...`, the tuiloop script, torchrun's `-m tuiloop`
        tuiloop_pids.add(p.pid)
        if "_launch" in argv:  # `tuiloop _launch RUN_DIR ...`
            if str(run_dir) in argv:
                live.append(p)
        elif "_rank" in argv:  # the launcher hands its ranks the run directory in their environment
            try:
                if p.environ().get("TUILOOP_RUN_DIR") == str(run_dir):
                    live.append(p)
            except psutil.Error:
                continue
    zombies = [
        p
        for p in psutil.process_iter(["status", "ppid"])
        if p.info["status"] == psutil.STATUS_ZOMBIE and p.info["ppid"] in tuiloop_pids
    ]
    return live + zombies


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(b")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


@drives_a_terminal
class Tmux:
    """A private tmux server (its own socket): real terminals the tests type into and read."""

    def __init__(self, cwd: Path) -> None:
        self.socket = f"tuiloop-test-{uuid.uuid4().hex[:10]}"
        self.cwd = cwd

    def _tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=check, env=cli_env()
        )

    def new(self, name: str, command: str, width: int = 100, height: int = 30) -> str:
        """A detached session running ``command`` (a shell line) in ``cwd``; the pane stays after exit."""
        env = "PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 TERM=xterm-256color"
        self._tmux(
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            str(width),
            "-y",
            str(height),
            "-c",
            str(self.cwd),
            f"env {env} {command}; echo '[exit '$?']'; sleep 600",
        )
        return name

    def send(self, name: str, *keys: str) -> None:
        self._tmux("send-keys", "-t", name, *keys)

    def resize(self, name: str, width: int, height: int) -> None:
        self._tmux("resize-window", "-t", name, "-x", str(width), "-y", str(height))

    def screen(self, name: str) -> str:
        return self._tmux("capture-pane", "-p", "-t", name, check=False).stdout

    def wait_for(self, name: str, pattern: str, timeout: float = 60) -> str:
        """Until the screen matches ``pattern`` (a regex); returns the screen."""
        last = ""

        def seen() -> str | None:
            nonlocal last
            last = self.screen(name)
            return last if re.search(pattern, last) else None

        try:
            return wait_until(seen, timeout, f"{pattern!r} on the screen of {name}", every=0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}; the screen was:\n{last}") from None

    def pane_pid(self, name: str) -> int:
        return int(self._tmux("display-message", "-p", "-t", name, "#{pane_pid}").stdout.strip())

    def kill_session(self, name: str) -> None:
        """The terminal goes away: tmux hangs up the pane's processes (SIGHUP), as an SSH drop does."""
        self._tmux("kill-session", "-t", name)

    def close(self) -> None:
        self._tmux("kill-server", check=False)


def freeze(pid: int, timeout: float = 10) -> None:
    """SIGSTOP ``pid`` and wait until every one of its threads has stopped: on a loaded machine
    a thread may run on for a while after the signal was sent (Linux /proc)."""

    os.kill(pid, signal.SIGSTOP)
    wait_until(
        lambda: all(state in (b"T", b"t") for state in thread_states(pid)),
        timeout,
        f"every thread of process {pid} to stop",
    )
