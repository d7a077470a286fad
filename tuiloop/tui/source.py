"""Where the monitor's events come from: a run directory's event log, and whether its run is live.

The monitor's reader thread calls these; nothing here touches the screen.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Protocol

from tuiloop.engine.events import Event
from tuiloop.rundir.eventlog import EventTail
from tuiloop.rundir.state import run_state
from tuiloop.runner.processes import kill_tree

READ_CHUNK = 4 << 20  # bytes of the log parsed per poll, so catching up on a long run stays responsive


class EventSource(Protocol):
    """What the monitor reads: new events, and whether the training process is still there."""

    def poll(self) -> list[Event]: ...

    def alive(self) -> bool: ...

    def exit_code(self) -> int | None: ...

    def problems(self) -> list[str]: ...

    def follow(self, proc: subprocess.Popen | None) -> None: ...


class RunSource:
    """Tails ``run_dir/events.jsonl``; the run is live while ``proc`` runs (when we started it)
    or while it holds its lock."""

    def __init__(self, run_dir: Path, proc: subprocess.Popen | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.proc = proc
        self.tail = EventTail(self.run_dir, from_digest=True)  # a long run: its saved series, then the rest of the log
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

    def follow(self, proc: subprocess.Popen | None) -> None:
        """The run goes on in a new process (resumed from the monitor): watch that one."""
        self.proc = proc

    def kill(self) -> bool:
        """SIGKILL the training process if we started it, and what it started (a forced exit it
        could not be told about)."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        kill_tree(self.proc.pid)
        return True
