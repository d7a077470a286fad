"""``[run] tensorboard = true``: the run mirrored live into ``RUN_DIR/tensorboard``.

The training process subscribes :class:`TensorBoardSink`; the training thread only queues the
events, and a thread of its own turns them into the same scalars ``tuiloop export --format
tensorboard`` writes (:mod:`tuiloop.rundir.history`), flushed every few seconds and at the end.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from pathlib import Path

from tuiloop.engine.events import Event, EventReader, Finished, RunStarted, Tested, TrainSteps, Validated, on
from tuiloop.rundir.history import (
    INSTALL,
    TENSORBOARD_DIR,
    Scalar,
    ScalarFile,
    TensorBoardXMissing,
    history_scalars,
    read_history,
    require_tensorboardx,
    row_scalars,
    step_rows,
    test_row,
    validation_row,
)
from tuiloop.spec import Spec, SpecError

LIVE_SUFFIX = ".tuiloop-live"


def check_spec(spec: Spec) -> None:
    """Raise :class:`SpecError` if the spec asks for the mirror and tensorboardX cannot be imported."""
    if not spec.run.tensorboard:
        return
    try:
        require_tensorboardx()
    except TensorBoardXMissing as e:
        raise SpecError(
            f"{spec.where}, [run] tensorboard",
            f"mirroring the run to TensorBoard needs tensorboardX, which cannot be imported ({e.__cause__})",
            f"Install it with: {INSTALL} (or pip install tensorboardX), or set tensorboard = false.",
        ) from None


class TensorBoardSink(EventReader):
    """An engine sink writing the run's scalars into ``RUN_DIR/tensorboard`` as it trains.

    Each start of the run writes a file of its own. A resumed one is complete by itself: it tells
    TensorBoard to hide the earlier files' points (a killed session's file lacks its last seconds,
    and holds steps the resume redoes), then writes the log's steps up to the checkpoint again.
    The training thread queues the events this sink has handlers for; its own thread runs them.
    """

    def __init__(self, run_dir: Path, flush_secs: float = 5.0) -> None:
        require_tensorboardx()
        self.run_dir = run_dir
        self.logdir = run_dir / TENSORBOARD_DIR
        self.flush_secs = flush_secs
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._file: ScalarFile | None = None  # the writer thread's
        self._thread = threading.Thread(target=self._work, name="tuiloop-tensorboard", daemon=True)
        self._thread.start()
        self._closed = False

    def __call__(self, event: Event) -> None:
        if type(event) in self.handlers:
            self._queue.put(event)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, flush and close the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)

    def _work(self) -> None:
        next_flush = time.monotonic() + self.flush_secs
        try:
            while True:
                try:
                    event = self._queue.get(timeout=max(next_flush - time.monotonic(), 0.01))
                except queue.Empty:  # quiet for a while (validating, paused): flush what was written
                    self._flush()
                    next_flush = time.monotonic() + self.flush_secs
                    continue
                if event is None:
                    break
                self.dispatch(event)
                if time.monotonic() >= next_flush:
                    self._flush()
                    next_flush = time.monotonic() + self.flush_secs
        except (
            Exception
        ) as e:  # a full disk must not end the training: the log keeps everything (tuiloop export rebuilds it)
            print(
                f"tuiloop: warning: the TensorBoard mirror stopped: {type(e).__name__}: {e}",
                file=sys.stderr,
                flush=True,
            )
            self._drain()
        finally:
            if self._file is not None:
                self._file.close()

    # ---- the writer thread's handlers ----------------------------------------------------------
    @on(RunStarted)
    def _started(self, ev: RunStarted) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._file = self._open(ev)

    @on(TrainSteps)
    def _train_steps(self, ev: TrainSteps) -> None:
        self._add([s for row in step_rows(ev) for s in row_scalars(row)])

    @on(Validated)
    def _validated(self, ev: Validated) -> None:
        self._add(row_scalars(validation_row(ev)))

    @on(Tested)
    def _tested(self, ev: Tested) -> None:
        self._add(row_scalars(test_row(ev)))

    @on(Finished)
    def _finished(self, ev: Finished) -> None:
        self._flush()

    def _add(self, scalars: list[Scalar]) -> None:
        if scalars:
            self._file = self._file or self._open(None)
            self._file.add(scalars)

    def _flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def _open(self, started: RunStarted | None) -> ScalarFile:
        suffix = f".{(started.session if started is not None else '') or 'run'}{LIVE_SUFFIX}"
        if started is None or not started.resumed_from:
            return ScalarFile(self.logdir, suffix)
        file = ScalarFile(self.logdir, suffix, purge_step=1)
        h, _ = read_history(
            self.run_dir
        )  # by now it may hold this session's first steps too: they come through the queue
        file.add(s for s in history_scalars(h) if s.step <= started.start_step)
        return file

    def _drain(self) -> None:
        """After a failure: keep taking events (so the queue does not grow) until closed."""
        while self._queue.get() is not None:
            pass
