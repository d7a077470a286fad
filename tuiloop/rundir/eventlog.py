"""``events.jsonl``: the run's append-only event log. Its writer and its readers live here.

One JSON object per line, ``{"event": KIND, ...fields}``, written and flushed as each event
happens, so a tail sees it at once and a killed process loses at most the line it was writing.
Readers skip, and report, lines they cannot use: a line torn by a kill, an event type from a
newer tuiloop, an event with a field missing.

The writer also keeps what the per-step and per-sample lines add up to and saves it beside the
log with where the other lines are (:mod:`tuiloop.rundir.digest_file`); a reader asked to
(``from_digest=True``) starts from that, so opening a day-long run reads a few thousand lines, not
a third of a million. ``ls`` reads the log its own quicker way (:mod:`tuiloop.rundir.scan`).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from tuiloop.engine.events import Event, Finished, event_from_dict, line_prefix
from tuiloop.rundir.digest import DigestLoaded, RunDigest, load_digest
from tuiloop.rundir.digest_file import SavedDigest, save_digest
from tuiloop.rundir.handle import RunDir, held
from tuiloop.rundir.layout import EVENTS


def encode(event: Event) -> bytes:
    """One event as its line in the log, newline included."""
    return (event.to_json() + "\n").encode()


DIGEST_EVERY_S = 30.0  # the writer saves digest.json this often (the run's own clock)


class EventLog:
    """Appends events to ``events.jsonl``; callable as an engine sink, safe from any thread.

    It keeps the run's :class:`RunDigest` too and saves it (``digest.json``) every
    ``digest_every`` seconds of the events' own clock, at a ``finished`` event and on
    ``close``; None keeps none. A log continued by a resumed run starts from the saved digest there
    and reads only the lines after it (a log without one: all of it, once).
    """

    def __init__(
        self,
        run_dir: Path | RunDir,
        digest_every: float | None = DIGEST_EVERY_S,
        on_gone: Callable[[str], None] | None = None,
    ) -> None:
        """``on_gone``: called once, with why, if the run directory (or its log) is deleted while the
        log is open; nothing more is written then."""
        self.home, self._done = held(run_dir)  # written through this handle, never through a link
        self.run_dir = self.home.path
        self._lock = threading.Lock()
        self._file = self.home.append(EVENTS)
        self._on_gone = on_gone
        self.gone = ""  # why the run directory is gone, once it is
        size = os.fstat(self._file.fileno()).st_size
        if size and self._last_byte(size) != b"\n":  # a killed process may have left half a line: end it
            self._file.write(b"\n")
            self._file.flush()
        self._offset = self._file.tell()  # bytes in the log: where the next line goes
        self._every = digest_every
        self._snap: SavedDigest[RunDigest] | None = self._restore() if digest_every is not None else None
        self._saved_at: float | None = None  # event time of the last save (at first: of the first event)
        self._unsaved: bytes | None = None  # the last line written, if written since that save
        self.error: OSError | None = None  # the write that failed (a full disk): nothing is written after it

    def _last_byte(self, size: int) -> bytes:
        with self.home.reader(EVENTS) as f:
            f.seek(size - 1)
            return f.read(1)

    def _restore(self) -> SavedDigest[RunDigest] | None:
        """The saved digest of the log as it is: the one saved there, moved on by the lines after it."""
        try:
            snap = load_digest(self.home.via())
            if snap is None or snap.kinds != RunDigest.KINDS:  # none, or an older tuiloop's
                snap = SavedDigest(RunDigest())
            with self.home.reader(EVENTS) as f:
                f.seek(snap.offset)
                for line in f:
                    if snap.offset >= self._offset:
                        break
                    try:
                        event: Event | None = decode(line)
                    except ValueError:
                        event = None  # readers skip it too
                    snap.add(event, line)
            return snap
        except Exception:  # a cache must never stop a run; without it views read the whole log
            return None

    def __call__(self, event: Event) -> None:
        line = encode(event)
        with self._lock:
            if self._file.closed or self.error is not None or self.gone or self._went():
                return
            try:
                self._file.write(line)
                self._file.flush()
                if type(event) is Finished:  # flushed lines survive a killed process; this, a lost machine
                    os.fsync(self._file.fileno())
            except OSError as e:  # the line may be half written: later lines would only be torn ones
                self.error = e
                raise
            self._offset += len(line)
            if self._snap is not None:
                self._keep(event, line)

    def _went(self) -> bool:
        """True (once ``on_gone`` is told) if the log or the run directory was deleted. A directory
        moved elsewhere is still the run's own: the handle writes into it wherever it is."""
        if os.fstat(self._file.fileno()).st_nlink > 0 and os.fstat(self.home.fd).st_nlink > 0:
            return False
        self.gone = f"{self.run_dir} was deleted while the run was live (its event log is gone)"
        if self._on_gone is not None:
            self._on_gone(self.gone)
        return True

    def _keep(self, event: Event, line: bytes) -> None:
        assert self._snap is not None and self._every is not None
        try:
            self._snap.add(event, line)
        except Exception:  # as above: stop keeping it; the digest saved last still fits the log
            self._snap = None
            return
        self._unsaved = line
        if self._saved_at is None:
            self._saved_at = event.time
        if type(event) is Finished or abs(event.time - self._saved_at) >= self._every:  # abs: a clock set back
            self._save()

    def _save(self) -> None:
        if self._snap is None or self._unsaved is None:
            return
        try:
            save_digest(self.home, self._snap, self._unsaved)
        except (OSError, ValueError, TypeError):
            pass  # the older saved digest still fits the log; readers read more of it
        self._saved_at, self._unsaved = self._snap.time, None

    def close(self) -> None:
        """Save the saved digest (if events came since the last save) and close the log."""
        with self._lock:
            if not self._file.closed and self.error is None:
                self._save()
            try:
                self._file.close()
            except OSError:  # what a failed write left in the buffer: the error was told when it came
                pass
            self._done()


def decode(line: bytes) -> Event:
    """One line as an event; raises ValueError saying why it cannot be used."""
    try:
        d = json.loads(line)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None
    except ValueError:
        raise ValueError("not a JSON object (a line cut short by a killed process?)") from None
    if not isinstance(d, dict):
        raise ValueError(f"a JSON {type(d).__name__}, not an object")
    return event_from_dict(d)


class EventTail:
    """Reads ``events.jsonl`` incrementally: each ``poll()`` returns the events appended since.

    A line still being written (no trailing newline yet) waits for the next poll. Lines that
    cannot be used are skipped; ``problems`` collects why (the first few of them).

    ``from_digest``: if the run has a saved digest that fits its log, the first poll returns the events
    before its offset but those of the kinds it digested, then a :class:`DigestLoaded` that
    stands for them (a :class:`~tuiloop.tui.model.MonitorModel` takes its digest in place of
    what came before). ``skip``: kinds never returned (``show`` prints no per-step lines).
    """

    MAX_PROBLEMS = 20

    def __init__(self, run_dir: Path, from_digest: bool = False, skip: tuple[str, ...] = ()) -> None:
        self.path = run_dir / EVENTS
        self._offset = 0
        self._partial = b""
        self._from_digest = from_digest
        self._skip = tuple(line_prefix(kind) for kind in skip)
        self.lines = 0
        self.skipped = 0
        self.problems: list[str] = []

    def poll(self, max_bytes: int = 64 << 20) -> list[Event]:
        if self._from_digest:
            self._from_digest = False
            snap = load_digest(self.path.parent)
            if snap is not None:
                return self._catch_up(snap)
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
        events: list[Event] = []
        self._take(lines, self.lines + 1, events)
        self.lines += len(lines)
        return events

    def skip_to_end(self) -> None:
        """Go on from the log as it is now: the next poll returns only the lines appended after
        this call (and a line still being written, whole)."""
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(size - (1 << 16), 0))
                tail = f.read()
        except FileNotFoundError:
            return
        self._from_digest, self._partial = False, b""
        self._offset = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else size - len(tail)

    def _catch_up(self, snap: SavedDigest[RunDigest]) -> list[Event]:
        """The lines the saved digest's ranges point to, then the saved digest; on from its offset."""
        events: list[Event] = []
        read = 0
        with open(self.path, "rb") as f:
            for start, end, first in snap.ranges:
                f.seek(start)
                lines = f.read(end - start).split(b"\n")[:-1]
                self._take(lines, first, events)
                read += len(lines)
        self._offset, self.lines = snap.offset, snap.lines
        events.append(DigestLoaded(snap.digest, snap.lines - read, time=snap.time))
        return events

    def _take(self, lines: list[bytes], first: int, events: list[Event]) -> None:
        """Decode ``lines`` (numbered from ``first``) into ``events``, but those of the kinds in ``skip``."""
        for n, line in enumerate(lines, first):
            if not line.strip() or (self._skip and line.startswith(self._skip)):
                continue
            try:
                events.append(decode(line))
            except ValueError as e:
                self.skipped += 1
                if len(self.problems) < self.MAX_PROBLEMS:
                    self.problems.append(f"line {n}: {e}")


def read_events(run_dir: Path, from_digest: bool = False, skip: tuple[str, ...] = ()) -> tuple[list[Event], EventTail]:
    """All events of a run, in order, and the reader (its ``problems`` say what was skipped);
    ``from_digest`` and ``skip`` as for :class:`EventTail`."""
    tail = EventTail(run_dir, from_digest=from_digest, skip=skip)
    out: list[Event] = []
    while batch := tail.poll():
        out.extend(batch)
    return out, tail
