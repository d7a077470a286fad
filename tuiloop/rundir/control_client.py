"""The client side of a run's control socket: :func:`send_command`, and the socket's address.

A live run that is busy (its backlog full during a burst of connections, or its process frozen
for a moment) is waited for, within the command's timeout: the connection is tried again with a
short backoff instead of failing at once with EAGAIN. Nothing is sent before the run took the
connection, so trying again never sends a command twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuiloop.rundir.layout import CONTROL
from tuiloop.rundir.lock import is_locked

_MAX_SUN_PATH = 100  # sun_path is 104-108 bytes; keep a margin
RETRY_S = (0.01, 0.2)  # the first and the longest wait between two tries to connect


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """A bindable/connectable name for ``path``, even when the path is too long for sun_path.

    Long paths go through ``/proc/self/fd/N/<name>`` on Linux, which the kernel resolves
    like the real directory.
    """
    text = str(path)
    if len(os.fsencode(text)) <= _MAX_SUN_PATH:
        yield text
        return
    if not sys.platform.startswith("linux"):
        raise OSError(f"socket path too long for this platform: {text}")
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class ControlError(Exception):
    """The run could not be reached or refused the command."""


class ControlTimeout(ControlError):
    """The run is live but did not take the connection, or did not answer, in time."""


def _live(run_dir: Path) -> bool:
    try:
        return is_locked(run_dir)
    except OSError:
        return False


def _connect(run_dir: Path, deadline: float, timeout: float) -> socket.socket:
    """A connection the run took, tried again while it is live but does not take it (yet)."""
    wait = RETRY_S[0]
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(max(deadline - time.monotonic(), 0.001))  # a stuck run must not hang the caller
        try:
            with socket_address(run_dir / CONTROL) as addr:
                s.connect(addr)
            return s
        except (BlockingIOError, ConnectionRefusedError) as e:
            s.close()
            # EAGAIN: the backlog is full. Refused: nobody listens, which a live run's socket
            # shows only for a moment (a resumed run replaces a crashed run's stale one).
            if isinstance(e, ConnectionRefusedError) and not _live(run_dir):
                raise ControlError(
                    f"{run_dir} is not live: its process has gone and left a stale control socket"
                ) from e
            if time.monotonic() + wait >= deadline:
                raise ControlTimeout(
                    f"{run_dir} is live but did not take the connection within {timeout:g}s "
                    "(its control socket is busy, or its process is stopped)"
                ) from e
            time.sleep(wait)
            wait = min(wait * 2, RETRY_S[1])
        except BaseException:
            s.close()
            raise


def send_command(run_dir: Path, cmd: str, timeout: float = 3.0, **fields: Any) -> dict:
    """Send one command to a live run and return its reply, all within ``timeout`` seconds;
    ``fields`` go in the request beside ``cmd`` (``set``'s settings). Raises :class:`ControlError`
    (:class:`ControlTimeout` when a live run did not answer in time)."""
    run_dir = Path(run_dir)
    stale = f"{run_dir} is not live: its process has gone and left a stale control socket"
    no_answer = f"{run_dir} did not answer {cmd!r} within {timeout:g}s (is its process stopped?)"
    deadline = time.monotonic() + timeout
    try:
        s = _connect(run_dir, deadline, timeout)
    except FileNotFoundError as e:
        raise ControlError(f"{run_dir} is not live: it has no control socket") from e
    except PermissionError as e:
        raise ControlError(f"permission denied: only the user who started {run_dir} can control it") from e
    except TimeoutError as e:
        raise ControlTimeout(no_answer) from e
    except OSError as e:
        raise ControlError(f"could not reach {run_dir}: {e}") from e
    try:
        try:
            s.settimeout(max(deadline - time.monotonic(), 0.001))
            s.sendall(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the run refused us before reading; its reason is waiting to be read
        s.settimeout(max(deadline - time.monotonic(), 0.001))
        line = s.makefile("rb").readline(4096)
    except ConnectionResetError as e:  # the process died between our connect and its reply
        if not _live(run_dir):
            raise ControlError(stale) from e
        raise ControlError(f"{run_dir} closed the connection without answering {cmd!r}") from e
    except TimeoutError as e:
        raise ControlTimeout(no_answer) from e
    except OSError as e:
        raise ControlError(f"could not reach {run_dir}: {e}") from e
    finally:
        s.close()
    try:
        reply = json.loads(line)
    except ValueError as e:
        raise ControlError(f"{run_dir} gave no answer to {cmd!r}") from e
    if not isinstance(reply, dict) or not reply.get("ok"):
        error = reply.get("error") if isinstance(reply, dict) else None
        raise ControlError(error if isinstance(error, str) else "command refused")
    return reply
