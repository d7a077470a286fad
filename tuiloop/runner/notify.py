"""Being told: a run's ending, failure, stall, NaN or new best, sent to a command of the user's
and to any service Apprise knows (``[notify]``, :mod:`tuiloop.spec.userconfig`).

The :class:`Notifier` hears every event of the run in the training process (rank 0: the one
with the :class:`~tuiloop.runner.life.RunLife`), picks those ``on`` names and queues a notice;
a thread of its own sends them, each within ``timeout`` seconds. A notice never blocks or fails
the run: a command that fails, hangs or is missing, or a service that does not answer, is
logged once (a warning in the event log) and the run goes on. At the run's end the process waits
for the notices still queued, up to about twice ``timeout``, so the last one is not lost.
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuiloop.engine import sentences
from tuiloop.engine.events import Event, Failed, Finished, Message, RunStarted, Stalled, Validated
from tuiloop.engine.exceptions import NON_FINITE
from tuiloop.rundir.handle import RunDir
from tuiloop.rundir.layout import RUN_INFO, SPEC, read_json_in
from tuiloop.spec.errors import SpecError
from tuiloop.spec.load import tomllib
from tuiloop.spec.schema import NotifySpec
from tuiloop.spec.userconfig import notify_settings

ENV_PREFIX = "TUILOOP_"
APPRISE_TYPES = {"finished": "success", "failed": "failure", "nan": "failure", "stalled": "warning", "best": "info"}


@dataclass(frozen=True)
class Notice:
    """One notice: the event's name (``finished``, ``failed``, ...), the run's status then, a title
    and a message for a person, and the event itself for a program."""

    event: str
    status: str
    title: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


class Notifier:
    """Tells ``settings.on`` events of the run ``name`` in ``run_dir``; ``log`` takes the one warning
    per way of telling (the command, the URLs) that failed."""

    def __init__(self, settings: NotifySpec, run_dir: Path, name: str, log: Callable[[Event], None]) -> None:
        self.settings, self.run_dir, self.name, self.log = settings, run_dir, name, log
        self.on = set(settings.on)
        self.monitor: str | None = None
        self._failure: Failed | None = None
        self._nan_told = False
        self._queue: queue.Queue[Notice | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._warned: set[str] = set()
        self.sent: list[Notice] = []  # what was handed to every way of telling (tests, and a reader of this)

    @classmethod
    def for_run(cls, home: RunDir, run_dir: Path, log: Callable[[Event], None]) -> Notifier | None:
        """The notifier of the run in ``home``: the user's config.toml with the run's spec.toml over
        it; None when neither asks for notices. Settings that no longer check (the config changed
        since the run was started) are logged, and nothing is told."""
        try:
            table = tomllib.loads(home.read_bytes(SPEC).decode()).get("notify")
        except (OSError, ValueError):
            table = None  # a run started from Python, or a tracked loop: the user's config alone
        try:
            settings = notify_settings(table if isinstance(table, dict) else None)
        except SpecError as e:
            log(Message("warning", f"no notices: {e}"))
            return None
        if settings is None or not settings.on or not (settings.command or settings.urls):
            return None
        info = read_json_in(home, RUN_INFO) or {}
        name = info.get("name")
        return cls(settings, run_dir, name if isinstance(name, str) else run_dir.name, log)

    # ---- hearing the run -------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        """An event of the run: a notice is queued if it is one the settings name."""
        notice = self._notice(event)
        if notice is None or notice.event not in self.on:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._send_all, name="tuiloop-notify", daemon=True)
            self._thread.start()
        self._queue.put(notice)

    def _notice(self, ev: Event) -> Notice | None:
        if isinstance(ev, RunStarted):
            self.monitor = ev.monitor
        elif isinstance(ev, Failed):
            self._failure = ev  # told with the ending that follows it
        elif isinstance(ev, Stalled):
            return self._make("stalled", "stalled", sentences.stalled(ev), ev)
        elif isinstance(ev, Validated):
            bad = [k for k, v in ev.metrics.items() if not math.isfinite(v)]
            if bad and not self._nan_told and "nan" in self.on:
                self._nan_told = True  # once: a metric that is NaN stays so, check after check
                return self._make("nan", "running", sentences.not_finite(ev, bad), ev)
            if ev.is_best and self.monitor:
                return self._make("best", "running", sentences.new_best(ev, self.monitor), ev)
        elif isinstance(ev, Finished):
            if ev.status != "failed":
                return self._make("finished", ev.status, sentences.finished(ev), ev)
            nan = ev.reason.startswith(NON_FINITE) and "nan" in self.on
            text = sentences.finished(ev)
            if self._failure is not None:
                text += "\n" + sentences.failed(self._failure)
            return self._make("nan" if nan else "failed", "failed", text, ev)
        return None

    def _make(self, what: str, status: str, message: str, ev: Event) -> Notice:
        return Notice(what, status, f"tuiloop: {self.name} {what}", message, ev.to_dict())

    # ---- telling --------------------------------------------------------------------------
    def close(self) -> None:
        """Wait for the notices still queued (up to about twice the timeout), then stop."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(2 * self.settings.timeout + 1)

    def _send_all(self) -> None:
        while (notice := self._queue.get()) is not None:
            if self.settings.command:
                self._try("command", lambda: self._run_command(notice))
            if self.settings.urls:
                self._try("urls", lambda: self._apprise(notice))
            self.sent.append(notice)

    def _try(self, way: str, send: Callable[[], None]) -> None:
        try:
            send()
        except Exception as e:
            if way not in self._warned:  # once per run: a broken command must not fill the log
                self._warned.add(way)
                what = f"the notify command ({self.settings.command})" if way == "command" else "the notify URLs"
                try:
                    self.log(Message("warning", f"{what} failed: {e}; the run goes on (later failures are not logged)"))
                except Exception:
                    pass  # the log itself failed: the run says that, not the notifier

    def payload(self, notice: Notice) -> dict[str, Any]:
        """The JSON a command reads on its stdin."""
        return {
            "event": notice.event,
            "status": notice.status,
            "title": notice.title,
            "message": notice.message,
            "run_dir": str(self.run_dir),
            "name": self.name,
            "host": socket.gethostname(),
            "details": notice.details,
        }

    def environment(self, notice: Notice) -> dict[str, str]:
        """TUILOOP_EVENT, _STATUS, _TITLE, _MESSAGE, _RUN_DIR, _NAME, _HOST beside the process's own."""
        fields = {k: v for k, v in self.payload(notice).items() if isinstance(v, str)}
        return {**os.environ, **{ENV_PREFIX + k.upper(): v for k, v in fields.items()}}

    def _run_command(self, notice: Notice) -> None:
        assert self.settings.command is not None
        proc = subprocess.Popen(
            ["/bin/sh", "-c", self.settings.command],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.environment(notice),
            start_new_session=True,  # its own group: a timeout ends the shell and what it started
        )
        try:
            _, err = proc.communicate(json.dumps(self.payload(notice)).encode() + b"\n", self.settings.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise RuntimeError(f"it took longer than {self.settings.timeout:g}s and was ended") from None
        if proc.returncode:
            said = err.decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"exit status {proc.returncode}" + (f" ({said[-1]})" if said else ""))

    def _apprise(self, notice: Notice) -> None:
        import apprise  # lazy: an optional extra (tuiloop[notify]), checked when the spec was read

        box = apprise.Apprise()
        for url in self.settings.urls:
            box.add(url)
        done: list[bool] = []
        kind = APPRISE_TYPES[notice.event]
        sender = threading.Thread(
            target=lambda: done.append(bool(box.notify(title=notice.title, body=notice.message, notify_type=kind))),
            name="tuiloop-apprise",
            daemon=True,
        )
        sender.start()
        sender.join(self.settings.timeout)
        if not done:
            raise RuntimeError(f"no answer within {self.settings.timeout:g}s")
        if not done[0]:
            raise RuntimeError("Apprise could not deliver to every URL (its log says why)")
