"""Headless event sinks: the JSON-lines event log and plain progress lines."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import IO

from tuiloop.engine.events import (
    CheckpointSaved,
    EarlyStopUpdate,
    Event,
    Failed,
    Finished,
    LRChanged,
    Message,
    RunStarted,
    StateChanged,
    TrainSteps,
    Validated,
)


class JsonlSink:
    """Appends every event to ``events.jsonl``, one line each, flushed so tails see it at once."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", encoding="utf-8")
        if _ends_mid_line(path):  # a killed process may have left half a line: end it
            self._file.write("\n")

    def __call__(self, event: Event) -> None:
        self._file.write(event.to_json() + "\n")
        self._file.flush()
        if isinstance(event, Finished):  # flushed lines survive a killed process; this, a lost machine
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def _ends_mid_line(path: Path) -> bool:
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"


class PlainSink:
    """Plain lines for logs and pipes: no carriage returns, no colours, no cursor moves.

    One line per validation and per notable event, and a progress line at most every
    ``progress_every`` seconds inside long epochs. If the stream dies (a closed pipe, a hung-up
    terminal) it goes quiet instead of failing the run.
    """

    def __init__(self, stream: IO[str], progress_every: float = 30.0) -> None:
        self.stream = stream
        self.progress_every = progress_every
        self._last_progress = time.monotonic()
        self._epochs = 0
        self._steps: int | None = None
        self._dead = False

    def _print(self, text: str) -> None:
        if self._dead:
            return
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            self._dead = True

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, RunStarted):
            self._epochs, self._steps = ev.epochs, ev.steps_per_epoch
            what = f"resumed at epoch {ev.start_epoch + 1}, step {ev.start_step}" if ev.resumed_from else "started"
            self._print(f"run {ev.run_name} {what} on {ev.device_name}, {ev.num_params:,} parameters, {ev.epochs} epochs of {ev.steps_per_epoch or '?'} steps")
            self._print(f"run directory: {ev.run_dir}")
        elif isinstance(ev, TrainSteps):
            now = time.monotonic()
            if now - self._last_progress >= self.progress_every and ev.losses:
                self._last_progress = now
                self._print(f"epoch {ev.epoch + 1}/{self._epochs} step {ev.step_in_epoch}/{self._steps or '?'} loss {fmt(ev.losses[-1])} lr {ev.lr:.3g} {ev.samples_per_s:,.0f} samples/s")
        elif isinstance(ev, Validated):
            self._last_progress = time.monotonic()
            metrics = "  ".join(f"{k} {fmt(v)}" for k, v in ev.metrics.items())
            self._print(f"epoch {ev.epoch + 1}/{self._epochs}  {metrics}{'  *best' if ev.is_best else ''}")
        elif isinstance(ev, EarlyStopUpdate):
            if ev.counter or ev.triggered:
                self._print(f"early stopping: {ev.monitor} has not improved on {fmt(ev.best)} for {ev.counter}/{ev.patience} checks" + (" -> stopping" if ev.triggered else ""))
        elif isinstance(ev, LRChanged):
            self._print(f"learning rate {ev.previous:.3g} -> {ev.lr:.3g}")
        elif isinstance(ev, CheckpointSaved):
            if ev.tag != "last":
                metric = f" ({ev.monitor} {fmt(ev.metric)})" if ev.metric is not None else ""
                self._print(f"saved {ev.tag} checkpoint {ev.path}{metric}")
        elif isinstance(ev, StateChanged):
            self._print(f"state: {ev.state}" + (f" ({ev.reason})" if ev.reason else ""))
        elif isinstance(ev, Message):
            self._print(f"{ev.level}: {ev.text}")
        elif isinstance(ev, Failed):
            self._print(f"error: {ev.error}\n  where: {ev.where}")
        elif isinstance(ev, Finished):
            best = f", best {ev.monitor} {fmt(ev.best_value)} at epoch {ev.best_epoch + 1}" if ev.best_value is not None and ev.best_epoch is not None else ""
            self._print(f"finished: {ev.status} ({ev.reason}) after {ev.epochs_done} epochs, {ev.step} steps, {ev.wall_time_s:.1f}s{best}")
