"""``digest.json``: the training process's :class:`~tuiloop.rundir.digest.RunDigest`, saved beside
the event log so a view of a long run does not re-read every step.

The event log stays the truth; this file is a cache of what its first ``offset`` bytes add up
to, with the byte ranges of the lines there that are not of the digested kinds (a few thousand
a day: validations, checkpoints, states, messages). The writer
(:class:`~tuiloop.rundir.eventlog.EventLog`) saves it atomically every 30 s of the run's clock
and when a session ends. A reader loads it (:func:`tuiloop.rundir.digest.load_digest`), reads
those ranges, takes the digest in place of the rest (:class:`~tuiloop.rundir.digest.DigestLoaded`),
then reads on from the offset as usual: opening a run costs the same after a day as after a
minute, plus its validations.

A saved digest is used only if the log still holds, at its offset, the very line it was saved
after (length and hash); a log that was cut, replaced or belongs to another run fails that
check, and so does a damaged or unknown file. Then the reader reads the whole log: slower, the
same result. So do runs from before this file existed.

This module does not import the digest (which imports numpy): ``ls`` reads the file raw
(:func:`read_digest_file`) without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from tuiloop.engine.events import Event, SystemSample, TrainSteps
from tuiloop.rundir.layout import DIGEST_FILE, EVENTS

FORMAT = 2  # 2: the digest keeps the last steps one by one (train_recent)
# The kinds a RunDigest takes whole (RunDigest.KINDS): named here, where ls reads them without numpy.
DIGESTED_KINDS = (TrainSteps.kind, SystemSample.kind)


class Digest(Protocol):
    """What a saved digest keeps: a :class:`~tuiloop.rundir.digest.RunDigest`."""

    def apply(self, ev: Event) -> bool: ...

    def to_dict(self) -> dict[str, Any]: ...


D = TypeVar("D", bound=Digest)


@dataclass
class SavedDigest(Generic[D]):
    """A digest and the part of the log it covers; :meth:`add` moves it on by one line."""

    digest: D
    offset: int = 0  # bytes of the log covered
    lines: int = 0  # lines in them
    time: float = 0.0  # of the last event covered
    # [start, end, number of the first line] of each run of lines not of the digested kinds
    ranges: list[list[int]] = field(default_factory=list)
    kinds: tuple[str, ...] = DIGESTED_KINDS

    def add(self, event: Event | None, line: bytes) -> None:
        """``line`` (with its newline) follows in the log; ``event`` is what it says (None: unreadable)."""
        start = self.offset
        self.offset += len(line)
        self.lines += 1
        if event is not None:
            self.digest.apply(event)
            self.time = event.time
        if event is None or event.kind not in self.kinds:  # readers read this one (and report it if unreadable)
            last = self.ranges[-1] if self.ranges else None
            if last is not None and last[1] == start:
                last[1] = self.offset
            else:
                self.ranges.append([start, self.offset, self.lines])


def _fingerprint(line: bytes) -> str:
    return hashlib.sha1(line).hexdigest()


def save_digest(run_dir: Path, snap: SavedDigest[Any], last_line: bytes) -> None:
    """Write ``digest.json`` for ``snap``, whose covered bytes end with ``last_line`` (a temp
    file, then ``os.replace``: readers see the old file or the new one, never half of one)."""
    data = {
        "format": FORMAT,
        "offset": snap.offset,
        "lines": snap.lines,
        "time": snap.time,
        "last_line": {"length": len(last_line), "sha1": _fingerprint(last_line)},
        "kinds": list(snap.kinds),
        "ranges": snap.ranges,
        "digest": snap.digest.to_dict(),
    }
    path = run_dir / DIGEST_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, allow_nan=True, separators=(",", ":"))
        os.replace(tmp, path)  # no fsync: a saved digest lost with the machine only makes the next read slower
    except BaseException:  # a full disk: the older digest.json stays, and no temp file
        with contextlib.suppress(OSError):  # on a read-only folder even this fails
            tmp.unlink(missing_ok=True)
        raise


def read_digest_file(run_dir: Path) -> dict[str, Any] | None:
    """``digest.json`` as saved, if it fits the log (its digest left as a dict); else None."""
    try:
        with open(run_dir / DIGEST_FILE, "rb") as f:
            data = json.loads(f.read())
        return data if _fits(run_dir, data) else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _fits(run_dir: Path, data: Any) -> bool:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return False
    if not (
        isinstance(data["kinds"], list) and set(data["kinds"]) <= set(DIGESTED_KINDS)
    ):  # a newer tuiloop digests more
        return False
    offset, lines, last = data["offset"], data["lines"], data["last_line"]
    length = last["length"]
    if not all(type(n) is int for n in (offset, lines, length)) or not 0 < length <= offset:
        return False
    with open(run_dir / EVENTS, "rb") as f:
        if os.fstat(f.fileno()).st_size < offset:  # the log was cut or replaced
            return False
        f.seek(offset - length)
        line = f.read(length)
    if not line.endswith(b"\n") or _fingerprint(line) != last["sha1"]:  # another log, or another run's
        return False
    end = 0
    for r in data["ranges"]:  # in order, inside the covered bytes
        if not (
            isinstance(r, list)
            and len(r) == 3
            and all(type(n) is int for n in r)
            and end <= r[0] < r[1] <= offset
            and 0 < r[2] <= lines
        ):
            return False
        end = r[1]
    return True
