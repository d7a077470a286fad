"""Plain progress lines: what a headless run prints, and what ``show`` prints without a terminal."""

from __future__ import annotations

import time
from typing import IO

from tuiloop.engine import fmt
from tuiloop.engine.events import (
    CheckpointSaved,
    EarlyStopUpdate,
    Event,
    Failed,
    Finished,
    LRChanged,
    Message,
    RunStarted,
    SettingChanged,
    StateChanged,
    TrainSteps,
    Validated,
)


class PlainSink:
    """Plain lines for logs and pipes: no carriage returns, no colours, no cursor moves.

    One line per validation (with the early-stopping counter) and per notable event, and a
    progress line at most every ``progress_every`` seconds inside long epochs. If the stream
    dies (a closed pipe, a hung-up terminal) it goes quiet instead of failing the run, unless
    ``strict`` (then the error propagates: ``show | head`` ends when ``head`` does).
    """

    def __init__(self, stream: IO[str], progress_every: float = 30.0, strict: bool = False) -> None:
        self.stream = stream
        self.strict = strict
        self.progress_every = progress_every
        self._last_progress = time.monotonic()
        self._epochs = 0
        self._steps: int | None = None
        self._epoch_line: str | None = None  # waits for the early-stopping update of the same check
        self._dead = False

    def _print(self, text: str) -> None:
        if self._dead:
            return
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            if self.strict:
                raise
            self._dead = True

    def _flush_epoch(self, suffix: str = "") -> None:
        if self._epoch_line is not None:
            line, self._epoch_line = self._epoch_line, None
            self._print(line + suffix)

    def close(self) -> None:
        """Print what is still held back (the last epoch line waits for its early-stopping update)."""
        self._flush_epoch()

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, EarlyStopUpdate):
            counter = f"  patience {ev.counter}/{ev.patience}" + ("  -> early stop" if ev.triggered else "")
            self._flush_epoch(counter)
            return
        self._flush_epoch()
        if isinstance(ev, Validated):
            self._last_progress = time.monotonic()
            metrics = "  ".join(f"{k} {fmt.value(v)}" for k, v in ev.metrics.items())
            self._epoch_line = f"epoch {ev.epoch}/{self._epochs}  {metrics}{'  *best' if ev.is_best else ''}"
        elif isinstance(ev, TrainSteps):
            now = time.monotonic()
            if now - self._last_progress >= self.progress_every and ev.losses:
                self._last_progress = now
                self._print(
                    f"epoch {ev.epoch}/{self._epochs} step {ev.step_in_epoch}/{self._steps or '?'} loss {fmt.value(ev.losses[-1])} lr {fmt.lr(ev.lr)} {ev.samples_per_s:,.0f} samples/s"
                )
        elif isinstance(ev, RunStarted):
            self._epochs, self._steps = ev.epochs, ev.steps_per_epoch
            what = f"resumed at epoch {ev.start_epoch + 1}, step {ev.start_step}" if ev.resumed_from else "started"
            steps = fmt.plural(ev.steps_per_epoch, "step") if ev.steps_per_epoch else "? steps"
            self._print(
                f"run {ev.run_name} {what} on {ev.device_name}, {ev.num_params:,} parameters, {fmt.plural(ev.epochs, 'epoch')} of {steps}"
            )
            if ev.world_size > 1:
                per = ev.batch_size or 0
                total = per * ev.world_size * ev.accumulate_grad_batches
                self._print(
                    f"distributed: {ev.world_size} processes ({ev.backend}) on {', '.join(ev.nodes)}; batch {per} per process, {total} per optimizer step in all"
                )
            self._print(f"run directory: {ev.run_dir}")
        elif isinstance(ev, LRChanged):
            self._print(f"learning rate {fmt.lr(ev.previous)} -> {fmt.lr(ev.lr)}")
        elif isinstance(ev, SettingChanged):  # a key press or an edit at resume: when, and at which step
            if ev.key == "stop_after_epoch":
                what = f"stop after epoch {ev.epoch}: {'asked' if ev.new else 'cancelled'}"
            elif ev.key == "optimizer.lr":
                what = f"optimizer.lr: {fmt.lr(ev.old)} -> {fmt.lr(ev.new)}"
            else:
                what = f"{ev.key}: {ev.old!r} -> {ev.new!r}"
            self._print(f"{what} ({ev.source}, step {ev.step}, {_clock(ev.time)})")
        elif isinstance(ev, CheckpointSaved):
            if ev.tag == "manual":  # the s key: when, and at which step
                self._print(f"saved manual checkpoint {ev.path} (step {ev.step}, {_clock(ev.time)})")
            elif ev.tag != "last":
                metric = f" ({ev.monitor} {fmt.value(ev.metric)})" if ev.metric is not None else ""
                self._print(f"saved {ev.tag} checkpoint {ev.path}{metric}")
        elif isinstance(ev, StateChanged):
            at = f" at step {ev.step}" if ev.step else ""
            self._print(f"state: {ev.state}{at}" + (f" ({ev.reason})" if ev.reason else "") + f", {_clock(ev.time)}")
        elif isinstance(ev, Message):
            self._print(f"{ev.level}: {ev.text}")
        elif isinstance(ev, Failed):
            self._print(f"error: {ev.error}\n  where: {ev.where}")
        elif isinstance(ev, Finished):
            best = (
                f", best {ev.monitor} {fmt.value(ev.best_value)} at epoch {ev.best_epoch}"
                if ev.best_value is not None and ev.best_epoch is not None
                else ""
            )
            self._print(
                f"finished: {ev.status} ({ev.reason}) after {fmt.plural(ev.epochs_done, 'epoch')}, {fmt.plural(ev.step, 'step')}, {ev.wall_time_s:.1f}s{best}"
            )


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))
