"""Noticing a stuck run: no training step and no validation batch for too long.

A run blocked in a data read from a dead network share, in a collective waiting for a lost rank
or in a driver call looks, from outside, like a run that is merely slow. :class:`StallWatch`
looks from inside: a daemon thread of the training process compares the loop's heartbeat (the
steps done and the batches served, train and validation) every few seconds. When it has not
moved for ``stall_after`` seconds it logs a :class:`~tuiloop.engine.events.Stalled` event with
the Python stack of the loop's thread, the user's innermost frame first in ``where``; when it
moves again, a ``state`` event says the run is running again. Paused time does not count.

``stall_after`` (``[run] stall_after``) None is automatic: ten times the longest wait between
heartbeats seen so far in this session, and never under five minutes.

In a distributed run every rank watches its own loop. A rank other than 0 leaves its stall in
``ranks/rank-N.stalled.json`` (and its own log); rank 0, stalled too (it waits for that rank in
a collective), logs each such report as a ``stalled`` event of that rank, so the log says which
rank is stuck and on which line.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuiloop.engine import fmt, sentences
from tuiloop.engine.events import Event, Stalled, StateChanged, event_from_dict
from tuiloop.engine.origin import format_frames, stuck_frames

STALL_FILE = "rank-{rank}.stalled.json"  # in ranks/: a rank's stall, for rank 0 to log
MIN_STALL_S = 300.0  # the automatic limit is never under this
GENEROUS = 10.0  # ... and is this many times the longest wait seen
POLL_S = 5.0  # how often the heartbeat is read (a tenth of an explicit limit, if shorter)


class StallWatch:
    """Watches ``beat()`` (any value that changes while the loop moves) from a thread of its own
    and tells ``emit`` when it stops moving and when it moves again. ``idle()`` true (paused, or
    writing a checkpoint) does not count as stalled. The loop's thread is the one that starts it."""

    def __init__(
        self,
        emit: Callable[[Event], None],
        beat: Callable[[], Any],
        idle: Callable[[], bool],
        step: Callable[[], int],
        after: float | None = None,
        rank: int = 0,
        peers: Path | None = None,
    ) -> None:
        """``peers``: the folder where the ranks leave their stall reports (a distributed run)."""
        self.emit, self.beat, self.idle, self.step, self.after = emit, beat, idle, step, after
        self.rank, self.peers = rank, peers
        self._told_peers: set[int] = set()
        self.poll = min(POLL_S, after / 10) if after else POLL_S
        self.stalled = False
        self._loop_thread = threading.current_thread()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching (from the loop's own thread); a second call does nothing."""
        if self._thread is None:
            self._loop_thread = threading.current_thread()
            self._thread = threading.Thread(target=self._watch, name="tuiloop-stall", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop watching; nothing is emitted after this returns (up to the join's timeout)."""
        self._halt.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)

    def limit(self, longest: float) -> float:
        return self.after if self.after is not None else max(MIN_STALL_S, GENEROUS * longest)

    def _watch(self) -> None:
        last, since, longest = self.beat(), time.monotonic(), 0.0
        while not self._halt.wait(self.poll):
            now, beat = time.monotonic(), self.beat()
            if beat != last or self.idle():
                if not self.stalled:
                    longest = max(longest, now - since) if beat != last else longest
                else:
                    self.stalled = False
                    self._told_peers.clear()
                    self._tell(
                        StateChanged("running", f"{sentences.MOVING_AGAIN} {fmt.clock(now - since)}", self.step())
                    )
                last, since = beat, now
                continue
            quiet = now - since
            if not self.stalled and quiet >= self.limit(longest):
                self.stalled = True
                self._tell(self._stalled(quiet, self.limit(longest)))
            if self.stalled and self.rank == 0:
                self._peer_reports()

    def _stalled(self, quiet: float, after: float) -> Stalled:
        frame = sys._current_frames().get(self._loop_thread.ident or -1)
        frames = stuck_frames(traceback.extract_stack(frame)) if frame is not None else []
        where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"
        return Stalled(quiet, after, self.step(), where, format_frames(frames), self.rank)

    def _peer_reports(self) -> None:
        """Rank 0: log each other rank's stall report once."""
        if self.peers is None:
            return
        for path in sorted(self.peers.glob(STALL_FILE.format(rank="*"))):
            try:
                ev = event_from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, RecursionError):
                continue
            if isinstance(ev, Stalled) and ev.rank and ev.rank not in self._told_peers:
                self._told_peers.add(ev.rank)
                self._tell(ev)

    @classmethod
    def of(cls, trainer: Any, emit: Callable[[Event], None]) -> StallWatch:
        """The watch of a :class:`~tuiloop.engine.trainer.Trainer`'s loop: its steps and the
        batches its splits served; idle while paused or writing a checkpoint."""
        val = trainer.val_batches
        return cls(
            emit,
            lambda: (trainer.step, trainer.train_batches.served, val.served if val is not None else 0),
            lambda: trainer.steering.state == "paused" or trainer.checkpoints.writing,
            lambda: trainer.step,
            trainer.opt.stall_after,
            trainer.ranks.rank,
            trainer.ranks.log_dir if trainer.ranks.distributed else None,
        )

    @classmethod
    def of_follower(cls, trainer: Any) -> StallWatch:
        """A rank other than 0: its stall goes to its own log and to ``ranks/rank-N.stalled.json``."""
        log_dir: Path | None = trainer.ranks.log_dir
        report = log_dir / STALL_FILE.format(rank=trainer.ranks.rank) if log_dir is not None else None

        def tell(ev: Event) -> None:
            if isinstance(ev, Stalled):
                print(f"stalled: {sentences.stalled(ev)}", *ev.stack, sep="\n  ", flush=True)
            if report is None:
                return
            if isinstance(ev, Stalled):
                tmp = report.with_name(f".{report.name}.tmp")
                tmp.write_text(ev.to_json(), encoding="utf-8")
                os.replace(tmp, report)
            else:
                report.unlink(missing_ok=True)

        watch = cls.of(trainer, tell)
        watch.peers = None
        return watch

    def _tell(self, event: Event) -> None:
        if self._halt.is_set():
            return
        try:
            self.emit(event)
        except Exception:
            pass  # the log failed (a full disk): the run says that, not the watch
