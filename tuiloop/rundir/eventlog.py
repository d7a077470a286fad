"""``events.jsonl``: the run's append-only event log. Its writer and its readers live here.

One JSON object per line, ``{"event": KIND, ...fields}``, written and flushed as each event
happens, so a tail sees it at once and a killed process loses at most the line it was writing.
Readers skip, and report, lines they cannot use: a line torn by a kill, an event type from a
newer tuiloop, an event with a field missing.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from tuiloop.engine.events import Event, event_from_dict
from tuiloop.rundir.layout import EVENTS

# Per-step loss lines are most of a long log; readers that only need their last one (ls) skip
# the rest by this prefix. Every line starts with its kind: see Event.to_dict.
_STEPS_PREFIX = b'{"event":"train_steps",'


class EventLog:
    """Appends events to ``events.jsonl``; callable as an engine sink, safe from any thread."""

    def __init__(self, run_dir: Path) -> None:
        path = run_dir / EVENTS
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")
        if _ends_mid_line(path):  # a killed process may have left half a line: end it
            self._file.write("\n")

    def __call__(self, event: Event) -> None:
        line = event.to_json() + "\n"
        with self._lock:
            if self._file.closed:
                return
            self._file.write(line)
            self._file.flush()
            if event.kind == "finished":  # flushed lines survive a killed process; this, a lost machine
                os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _ends_mid_line(path: Path) -> bool:
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def decode(line: bytes) -> Event:
    """One line as an event; raises ValueError saying why it cannot be used."""
    try:
        d = json.loads(line)
    except ValueError:
        raise ValueError("not a JSON object (a line cut short by a killed process?)") from None
    if not isinstance(d, dict):
        raise ValueError(f"a JSON {type(d).__name__}, not an object")
    return event_from_dict(d)


class EventTail:
    """Reads ``events.jsonl`` incrementally: each ``poll()`` returns the events appended since.

    A line still being written (no trailing newline yet) waits for the next poll. Lines that
    cannot be used are skipped; ``problems`` collects why (the first few of them).
    """

    MAX_PROBLEMS = 20

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / EVENTS
        self._offset = 0
        self._partial = b""
        self.lines = 0
        self.skipped = 0
        self.problems: list[str] = []

    def poll(self, max_bytes: int = 64 << 20) -> list[Event]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read(max_bytes)
        except FileNotFoundError:
            return []
        if not chunk:
            return []
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            self.lines += 1
            if not line.strip():
                continue
            try:
                events.append(decode(line))
            except ValueError as e:
                self.skipped += 1
                if len(self.problems) < self.MAX_PROBLEMS:
                    self.problems.append(f"line {self.lines}: {e}")
        return events


def read_events(run_dir: Path) -> tuple[list[Event], EventTail]:
    """All events of a run, in order, and the reader (its ``problems`` say what was skipped)."""
    tail = EventTail(run_dir)
    out: list[Event] = []
    while batch := tail.poll():
        out.extend(batch)
    return out, tail


@dataclass
class Progress:
    """How far a run without a summary got, as ``ls`` shows it."""

    epochs: int | None = None
    done: int = 0  # completed epochs
    monitor: str | None = None
    best: float | None = None
    best_epoch: int | None = None  # counted from 1
    paused: bool = False
    last_time: float | None = None


def scan(run_dir: Path) -> Progress:
    """Epochs done, best so far and pause state, from the log; only the last step line is parsed."""
    p = Progress()
    last_steps: bytes | None = None
    try:
        f = open(run_dir / EVENTS, "rb")
    except OSError:
        return p
    with f:
        for line in f:
            if line.startswith(_STEPS_PREFIX):
                last_steps = line
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue  # a line still being written
            if not isinstance(ev, dict):
                continue
            kind = ev.get("event")
            p.last_time = ev.get("time", p.last_time)
            try:
                if kind == "run_started":
                    p.epochs, p.monitor = ev.get("epochs"), ev.get("monitor")
                    p.done = max(p.done, int(ev.get("start_epoch") or 0))
                elif kind == "validated":
                    p.done = max(p.done, int(ev["epoch"]))
                    value = (ev.get("metrics") or {}).get(p.monitor or "")
                    if ev.get("is_best") and value is not None:
                        p.best, p.best_epoch = value, int(ev["epoch"])
                elif kind == "checkpoint":
                    p.done = max(p.done, int(ev.get("epoch") or 0))
                elif kind == "state":
                    p.paused = ev.get("state") == "paused"
            except (KeyError, TypeError, ValueError):
                continue  # a line this version does not understand
    if last_steps is not None:
        try:
            ev = json.loads(last_steps)
            p.done = max(p.done, int(ev["epoch"]) - 1)  # steps of epoch k: the epochs before k are done
            p.last_time = max(p.last_time or 0.0, ev.get("time") or 0.0)
        except (ValueError, KeyError, TypeError):
            pass
    return p
