"""The control channel of a live run: a Unix socket in the run directory, owner-only.

Protocol: the client sends one JSON line ``{"cmd": "pause"}`` and reads one JSON line back,
``{"ok": true}`` or ``{"ok": false, "error": "..."}``. ``{"cmd": "set", "settings": {"optimizer.lr":
0.001}}`` brings settings (spec key -> TOML value, checked by ``tuiloop ctl RUN set`` first).
``ping`` answers the run's pid and :data:`PROTOCOL`, the version of this protocol (2: ``set``). The socket file is mode 0600 inside a
0700 run directory, and on Linux the server also checks the peer's uid (``SO_PEERCRED``).
The client is in :mod:`tuiloop.rundir.control_client`.

No number of misbehaving clients costs the run its files or its commands:

* one thread serves every client through a selector: no thread per connection;
* it holds at most :func:`max_clients` connections at once, an eighth of the soft limit on open
  files (``RLIMIT_NOFILE``) and never more than 64, so the run's own files (checkpoints, the
  summary, ``/proc`` for the machine's load) always find a descriptor. A connection over the cap
  pushes out the oldest, which has had the longest to speak, so a command gets through a flood;
* a client has :data:`IDLE_S` seconds from its connection to send its line;
* the listen backlog is the system's largest: a burst waits in the kernel, on no descriptor of ours;
* a failed ``accept()`` (out of descriptors: EMFILE, ENFILE; out of memory) is told and tried
  again after a backoff that doubles up to a second; it never ends the server;
* bad requests, silent connections and failed accepts are warned about a few times, then counted
  in one line a minute (:class:`~tuiloop.rundir.rate_limit.RateLimitedWarnings`).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tuiloop.engine.commands import COMMAND, Commands
from tuiloop.rundir.control_client import ControlError as ControlError
from tuiloop.rundir.control_client import send_command as send_command
from tuiloop.rundir.control_client import socket_address as socket_address
from tuiloop.rundir.handle import RunDir, held
from tuiloop.rundir.layout import CONTROL
from tuiloop.rundir.rate_limit import RateLimitedWarnings

PROTOCOL = 2  # 1: the commands of the table; 2: and `set` with its settings
IDLE_S = 5.0  # a client's time to send its request, from its connection
MAX_CLIENTS = 64  # connections held at once, whatever the limit on open files
MAX_LINE = 4096  # a request longer than this is read no further
ACCEPT_BATCH = 32  # connections taken before the server reads the ones it holds again
BACKOFF_S = (0.05, 1.0)  # the first and the longest wait after a failed accept()
WARN_FIRST, WARN_EVERY_S = 3, 60.0  # warnings of a kind told in full, then one count per interval
_LISTENER, _WAKE = "listener", "wake"


def max_clients(soft_limit: int | None = None) -> int:
    """How many connections the server holds at once: an eighth of the soft ``RLIMIT_NOFILE``
    (measured now, unless given), between 4 and :data:`MAX_CLIENTS`."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if soft_limit is None else soft_limit
    if soft == resource.RLIM_INFINITY or soft < 0:
        return MAX_CLIENTS
    return max(4, min(MAX_CLIENTS, soft // 8))


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


def parse_request(line: bytes) -> tuple[str, str]:
    """(command, "") for a valid request line, or ("", what is wrong with it)."""
    cmd, problem, _ = parse_request_fields(line)
    return cmd, problem


def parse_request_fields(line: bytes) -> tuple[str, str, dict]:
    """(command, "", the request) for a valid request line, or ("", what is wrong with it, {})."""
    try:
        request = json.loads(line)
    except ValueError:
        return "", "is not JSON", {}
    if not isinstance(request, dict):
        return "", f"is a JSON {type(request).__name__}, not an object", {}
    cmd = request.get("cmd")
    if not isinstance(cmd, str):
        return "", 'has no "cmd" string', {}
    if cmd == "set" and not isinstance(request.get("settings"), dict):
        return "", 'is a "set" without a "settings" object', {}
    return cmd, "", request


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    deadline: float  # monotonic; it is let go then, request or not
    line: bytearray = field(default_factory=bytearray)


class ControlServer:
    """Accepts the commands of the table (:data:`~tuiloop.engine.commands.COMMANDS`) and ``ping``
    on the run's socket, and forwards the commands to :class:`Commands`.

    A request it cannot use (not JSON, not an object, no command) is answered with an error and
    reported through ``warn`` (rate-limited); nothing a client does stops the server.
    """

    def __init__(self, run_dir: Path | RunDir, commands: Commands, warn: Callable[[str], None] | None = None) -> None:
        self.home, self._done = held(run_dir)  # bound and removed through this handle, never through a link
        self.path = self.home.path / CONTROL
        self.commands = commands
        self._warn_to = warn or (lambda text: None)

        def limited(summary: Callable[[int, float, str], str]) -> RateLimitedWarnings:
            return RateLimitedWarnings(self._warn, summary, WARN_FIRST, WARN_EVERY_S)

        self._bad = limited(
            lambda n, s, _: f"control socket: ignored {_plural(n, 'more bad request')} in the last {s:.0f}s"
        )
        self._silent = limited(
            lambda n, s, _: (
                f"control socket: closed {_plural(n, 'more connection')} that sent no request, in the last {s:.0f}s"
            )
        )
        self._failed = limited(
            lambda n, s, last: (
                f"control socket: {_plural(n, 'more failed accept')} in the last {s:.0f}s; the last: {last}"
            )
        )
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.home.unlink(CONTROL)  # a stale socket from a crashed run
        old = os.umask(0o177)
        try:
            with socket_address(Path(self.home.entry(CONTROL))) as addr:
                self._sock.bind(addr)
        finally:
            os.umask(old)
        os.chmod(CONTROL, 0o600, dir_fd=self.home.fd)
        self._sock.listen(socket.SOMAXCONN)
        self._sock.setblocking(False)
        self._owner = os.getuid()
        self._clients: dict[socket.socket, _Client] = {}  # in the order they connected
        self._backoff = 0.0  # the wait after the last failed accept (0: the last one worked)
        self._accept_again: float | None = None  # while accepting is held off: when it starts again
        self._closing = threading.Event()
        self._wake_r, self._wake_w = os.pipe()  # close() wakes the thread through it
        os.set_blocking(self._wake_w, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._sock, selectors.EVENT_READ, _LISTENER)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._thread = threading.Thread(target=self._serve, name="tuiloop-control", daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def _warn(self, text: str) -> None:
        try:
            self._warn_to(text)
        except Exception:
            pass  # the log itself failed (a full disk?): the run reports that, not the socket

    # ---- the loop ----------------------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                for key, _ in self._selector.select(self._timeout()):
                    if key.data is _LISTENER:
                        self._accept()
                    elif key.data is _WAKE:
                        with contextlib.suppress(OSError):
                            os.read(self._wake_r, 64)
                    elif isinstance(key.data, _Client):
                        self._read(key.data)
                self._tend()
            except Exception as e:  # a bug of ours must not leave the run without its commands
                if self._closing.is_set():
                    return
                self._failed(f"control socket: {type(e).__name__}: {e}")
                self._closing.wait(BACKOFF_S[1])

    def _timeout(self) -> float | None:
        """Seconds until the next client is due to be let go, accepting resumes or a count is told."""
        dues = [
            t
            for t in (self._accept_again, *(w.due() for w in (self._bad, self._silent, self._failed)))
            if t is not None
        ]
        if self._clients:
            dues.append(next(iter(self._clients.values())).deadline)
        return max(min(dues) - time.monotonic(), 0.0) if dues else None

    def _tend(self) -> None:
        now = time.monotonic()
        while self._clients:
            oldest = next(iter(self._clients.values()))
            if oldest.deadline > now:
                break
            self._let_go(oldest, f"control socket: closed a connection that sent no request within {IDLE_S:g}s")
        if self._accept_again is not None and now >= self._accept_again:
            self._accept_again = None
            self._selector.register(self._sock, selectors.EVENT_READ, _LISTENER)
        for warnings in (self._bad, self._silent, self._failed):
            warnings.tick()

    # ---- connections -------------------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # taken them all
            except ConnectionAbortedError:
                continue  # the client gave up before we took it
            except OSError as e:  # out of descriptors or memory: wait, then try again
                self._backoff = min(max(2 * self._backoff, BACKOFF_S[0]), BACKOFF_S[1])
                self._accept_again = time.monotonic() + self._backoff
                self._selector.unregister(self._sock)
                self._failed(f"control socket: could not accept a connection ({e}); trying again in {self._backoff:g}s")
                return
            self._backoff = 0.0
            try:
                self._admit(conn)
            except OSError:
                self._forget(conn)
                conn.close()

    def _admit(self, conn: socket.socket) -> None:
        cap = max_clients()
        while len(self._clients) >= cap:  # the oldest has had the longest to speak
            oldest = next(iter(self._clients.values()))
            self._let_go(oldest, f"control socket: closed a silent connection to make room ({cap} at most at once)")
        conn.setblocking(False)
        if not peer_allowed(peer_uid(conn), self._owner):
            self._answer(conn, {"ok": False, "error": "permission denied: not the owner of this run"})
            conn.close()
            return
        client = _Client(conn, time.monotonic() + IDLE_S)
        self._selector.register(conn, selectors.EVENT_READ, client)
        self._clients[conn] = client

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(MAX_LINE - len(client.line))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._forget(client.sock)
            return
        client.line += data
        end = client.line.find(b"\n")
        if end < 0 and data and len(client.line) < MAX_LINE:
            return  # more to come
        self._forget(client.sock)
        with client.sock:
            if client.line:  # a client that left without a word asked nothing
                self._handle(client.sock, bytes(client.line[: end + 1] if end >= 0 else client.line))

    def _handle(self, conn: socket.socket, line: bytes) -> None:
        cmd, problem, request = parse_request_fields(line)
        if problem:
            self._bad(f"control socket: ignored a request that {problem}: {line[:80]!r}")
            self._answer(conn, {"ok": False, "error": f"bad request: it {problem}"})
        elif cmd == "ping":
            self._answer(conn, {"ok": True, "pid": os.getpid(), "protocol": PROTOCOL})
        elif cmd == "set":
            self.commands.send_settings(request["settings"])
            self._answer(conn, {"ok": True})
        elif cmd in COMMAND:
            if COMMAND[cmd].at_once:  # answer first: the process ends as soon as it is told
                self._answer(conn, {"ok": True})
                conn.close()
                self.commands.send(cmd)
                return
            self.commands.send(cmd)
            self._answer(conn, {"ok": True})
        else:
            self._answer(conn, {"ok": False, "error": f"unknown command {cmd!r}"})

    def _answer(self, conn: socket.socket, reply: dict) -> None:
        with contextlib.suppress(OSError):  # one short line fits the socket's buffer; a peer gone is no matter
            conn.send(json.dumps(reply).encode() + b"\n")

    def _let_go(self, client: _Client, why: str) -> None:
        self._forget(client.sock)
        client.sock.close()
        self._silent(why)

    def _forget(self, conn: socket.socket) -> None:
        self._clients.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(conn)

    # ---- the end -----------------------------------------------------------------------------------
    def quiet(self) -> None:
        """Tell the counts held back now and warn no more: the run's log is about to end."""
        for warnings in (self._bad, self._silent, self._failed):
            warnings.flush(mute=True)

    def close(self) -> None:
        """Stop serving: the thread ends, every connection and the socket file go. Closing again
        does nothing."""
        if self._closing.is_set():
            return
        self._closing.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        for client in list(self._clients.values()):
            self._forget(client.sock)
            client.sock.close()
        with contextlib.suppress(OSError):
            self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            self._sock.close()
        if self.home.fd >= 0:
            self.home.unlink(CONTROL)
        self._done()
