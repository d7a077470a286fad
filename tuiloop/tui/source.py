"""Where the monitor's events come from: a run directory's event log, and whether its run is live.

The monitor's reader thread calls these; nothing here touches the screen.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Protocol

from tuiloop.engine.events import Event
from tuiloop.rundir.eventlog import EventTail
from tuiloop.rundir.state import run_state

READ_CHUNK = 4 << 20  # bytes of the log parsed per poll, so catching up on a long run stays responsive


class EventSource(Protocol):
    """What the monitor reads: new events, and whether the training process is still there."""

    def poll(self) -> list[Event]: ...

    def alive(self) -> bool: ...

    def exit_code(self) -> int | None: ...

    def problems(self) -> list[str]: ...


class RunSource:
    """Tails ``run_dir/events.jsonl``; the run is live while ``proc`` runs (when we started it)
    or while it holds its lock."""

    def __init__(self, run_dir: Path, proc: subprocess.Popen | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.proc = proc
        self.tail = EventTail(self.run_dir)
        self._reported = 0

    def poll(self) -> list[Event]:
        return self.tail.poll(READ_CHUNK)

    def problems(self) -> list[str]:
        """Why lines were skipped, the ones not reported before."""
        new = self.tail.problems[self._reported :]
        self._reported = len(self.tail.problems)
        return new

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return run_state(self.run_dir).live

    def exit_code(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def kill(self) -> bool:
        """SIGKILL the training process if we started it, and what it started (a forced exit it
        could not be told about)."""
        from tuiloop.session.processes import kill_tree

        if self.proc is None or self.proc.poll() is not None:
            return False
        kill_tree(self.proc.pid)
        return True


def parse_compute_apps(text: str, pid: int) -> int | None:
    """MiB used by ``pid`` in ``nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits``."""
    total = None
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and parts[0] == str(pid):
            try:
                total = (total or 0) + int(float(parts[1]))
            except ValueError:
                continue
    return total


def gpu_memory(pid: int) -> str | None:
    """GPU memory held by the training process, as nvidia-smi sees it (the TUI never imports torch)."""
    exe = shutil.which("nvidia-smi")
    if exe is None or pid <= 0:
        return None
    try:
        out = subprocess.run([exe, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    mib = parse_compute_apps(out.stdout, pid)
    if mib is None:
        return None
    return f"GPU mem {mib / 1024:.1f} GiB" if mib >= 1024 else f"GPU mem {mib} MiB"
