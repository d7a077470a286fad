"""Facts about processes by pid, for telling a live run from a dead one (Linux /proc where it helps)."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (zombies excepted, where that can be told)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Linux: a zombie has exited. Killed, a threaded process's leader turns Z while its other
    # threads still tear down (its files, sockets included, stay open), so look at every thread.
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc: trust kill(0)
    return any(_thread_state(pid, tid) not in (b"Z", b"X", None) for tid in tasks)


def _thread_state(pid: int, tid: str) -> bytes | None:
    try:
        with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None  # the thread is gone


def process_start(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (Linux); None where unknown.

    A pid and its start time name one process for good: a recycled pid has a later start.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
