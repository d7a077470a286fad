"""The control channel of a live run: a Unix socket in the run directory, owner-only.

Protocol: the client sends one JSON line ``{"cmd": "pause"}`` and reads one JSON line back,
``{"ok": true}`` or ``{"ok": false, "error": "..."}``. The socket file is mode 0600 inside a
0700 run directory, and on Linux the server also checks the peer's uid (``SO_PEERCRED``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from tuiloop.engine.commands import COMMAND, Commands
from tuiloop.rundir.handle import RunDir, held
from tuiloop.rundir.layout import CONTROL
from tuiloop.rundir.lock import is_locked

_MAX_SUN_PATH = 100  # sun_path is 104-108 bytes; keep a margin


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


def peer_uid(conn: socket.socket) -> int | None:
    """The connecting process's uid, where the platform tells it."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def peer_allowed(uid: int | None, owner: int) -> bool:
    """Only the run's owner may command it (root may too, as it can anyway)."""
    return uid is None or uid == owner or uid == 0


class ControlServer:
    """Accepts the commands of the table (:data:`~tuiloop.engine.commands.COMMANDS`) and ``ping``
    on the run's socket, and forwards the commands to :class:`Commands`.

    A request it cannot use (not JSON, not an object, no command) is answered with an error and
    reported through ``warn``; it never stops the server.
    """

    def __init__(self, run_dir: Path | RunDir, commands: Commands, warn: Callable[[str], None] | None = None) -> None:
        self.home, self._done = held(run_dir)  # bound and removed through this handle, never through a link
        self.path = self.home.path / CONTROL
        self.commands = commands
        self.warn = warn or (lambda text: None)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.home.unlink(CONTROL)  # a stale socket from a crashed run
        old = os.umask(0o177)
        try:
            with socket_address(Path(self.home.entry(CONTROL))) as addr:
                self._sock.bind(addr)
        finally:
            os.umask(old)
        os.chmod(CONTROL, 0o600, dir_fd=self.home.fd)
        self._sock.listen(8)
        self._owner = os.getuid()
        self._thread = threading.Thread(target=self._serve, name="tuiloop-control", daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            # one thread per client: a client that connects and says nothing delays no one else
            threading.Thread(target=self._serve_one, args=(conn,), name="tuiloop-control-client", daemon=True).start()

    def _serve_one(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        if not peer_allowed(peer_uid(conn), self._owner):
            conn.sendall(b'{"ok": false, "error": "permission denied: not the owner of this run"}\n')
            return
        line = conn.makefile("rb").readline(4096)
        cmd, problem = parse_request(line)
        if problem:
            self.warn(f"control socket: ignored a request that {problem}: {line[:80]!r}")
            reply = {"ok": False, "error": f"bad request: it {problem}"}
        elif cmd == "ping":
            reply = {"ok": True, "pid": os.getpid()}
        elif cmd in COMMAND:
            if COMMAND[cmd].at_once:  # answer first: the process ends as soon as it is told
                conn.sendall(b'{"ok": true}\n')
                self.commands.send(cmd)
                return
            self.commands.send(cmd)
            reply = {"ok": True}
        else:
            reply = {"ok": False, "error": f"unknown command {cmd!r}"}
        conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
        if self.home.fd >= 0:
            self.home.unlink(CONTROL)
        self._done()


def parse_request(line: bytes) -> tuple[str, str]:
    """(command, "") for a valid request line, or ("", what is wrong with it)."""
    try:
        request = json.loads(line)
    except ValueError:
        return "", "is not JSON"
    if not isinstance(request, dict):
        return "", f"is a JSON {type(request).__name__}, not an object"
    cmd = request.get("cmd")
    if not isinstance(cmd, str):
        return "", 'has no "cmd" string'
    return cmd, ""


class ControlError(Exception):
    """The run could not be reached or refused the command."""


def send_command(run_dir: Path, cmd: str, timeout: float = 3.0) -> dict:
    """Send one command to a live run and return its reply; raises :class:`ControlError`."""
    path = Path(run_dir) / CONTROL
    stale = f"{run_dir} is not live: its process has gone and left a stale control socket"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)  # a stuck run must not hang the caller
    try:
        with socket_address(path) as addr:
            s.connect(addr)
        try:
            s.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the run refused us before reading; its reason is waiting to be read
        line = s.makefile("rb").readline(4096)
    except FileNotFoundError as e:
        raise ControlError(f"{run_dir} is not live: it has no control socket") from e
    except PermissionError as e:
        raise ControlError(f"permission denied: only the user who started {run_dir} can control it") from e
    except ConnectionRefusedError as e:
        raise ControlError(stale) from e
    except ConnectionResetError as e:  # the process died between our connect and its reply
        if not is_locked(Path(run_dir)):
            raise ControlError(stale) from e
        raise ControlError(f"{run_dir} closed the connection without answering {cmd!r}") from e
    except TimeoutError as e:
        raise ControlError(f"{run_dir} did not answer {cmd!r} within {timeout:g}s (is its process stopped?)") from e
    except OSError as e:
        raise ControlError(f"could not reach {run_dir}: {e}") from e
    finally:
        s.close()
    try:
        reply = json.loads(line)
    except ValueError as e:
        raise ControlError(f"{run_dir} gave no answer to {cmd!r}") from e
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "command refused"))
    return reply
