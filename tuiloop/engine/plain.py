"""Plain progress lines: what a headless run prints, and what ``show`` prints without a terminal."""

from __future__ import annotations

import time
from typing import IO

from tuiloop.engine import fmt, sentences
from tuiloop.engine.events import (
    CheckpointSaved,
    EarlyStopUpdate,
    Event,
    EventReader,
    Failed,
    Finished,
    LRChanged,
    Message,
    RunStarted,
    SettingChanged,
    Stalled,
    StateChanged,
    Tested,
    TrainSteps,
    Validated,
    on,
)


class PlainSink(EventReader):
    """Plain lines for logs and pipes: no carriage returns, no colours, no cursor moves.

    One line per validation (with the early-stopping counter) and per notable event, and a
    progress line at most every ``progress_every`` seconds inside long epochs. The sentences are
    the monitor's log's (:mod:`tuiloop.engine.sentences`); a line about something a person did
    ends with the time it happened. If the stream dies (a closed pipe, a hung-up terminal) it
    goes quiet instead of failing the run, unless ``strict`` (then the error propagates:
    ``show | head`` ends when ``head`` does).
    """

    def __init__(self, stream: IO[str], progress_every: float = 30.0, strict: bool = False) -> None:
        self.stream = stream
        self.strict = strict
        self.progress_every = progress_every
        self._last_progress = time.monotonic()
        self._epochs = 0
        self._steps: int | None = None
        # a line that waits for the event that may complete it: an epoch's for its early-stopping
        # update, a best or periodic save's for the last.pt written at the same step
        self._held: str | None = None
        self._held_for: tuple[type[Event], int] | None = None  # (the type that completes it, its step)
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

    def _hold(self, line: str, completed_by: type[Event], step: int = 0) -> None:
        self._held, self._held_for = line, (completed_by, step)

    def _release(self, suffix: str = "") -> None:
        if self._held is not None:
            line, self._held, self._held_for = self._held, None, None
            self._print(line + suffix)

    def close(self) -> None:
        """Print what is still held back (the last epoch line waits for its early-stopping update)."""
        self._release()

    def __call__(self, ev: Event) -> None:
        if self._held_for is not None and type(ev) is not self._held_for[0]:
            self._release()
        self.dispatch(ev)

    @on(EarlyStopUpdate)
    def _early_stop(self, ev: EarlyStopUpdate) -> None:
        self._release(f"  {sentences.patience(ev)}" + ("  -> early stop" if ev.triggered else ""))

    @on(Validated)
    def _validated(self, ev: Validated) -> None:
        self._last_progress = time.monotonic()
        metrics = "  ".join(f"{k} {fmt.value(v)}" for k, v in ev.metrics.items())
        self._hold(f"epoch {ev.epoch}/{self._epochs}  {metrics}{'  *best' if ev.is_best else ''}", EarlyStopUpdate)

    @on(TrainSteps)
    def _train_steps(self, ev: TrainSteps) -> None:
        now = time.monotonic()
        if now - self._last_progress >= self.progress_every and ev.losses:
            self._last_progress = now
            self._print(
                f"epoch {ev.epoch}/{self._epochs} step {ev.step_in_epoch}/{self._steps or '?'} loss {fmt.value(ev.losses[-1])} lr {fmt.lr(ev.lr)} {ev.samples_per_s:,.0f} samples/s"
                + (f" {ev.tokens_per_s:,.0f} tokens/s" if ev.tokens_per_s is not None else "")
            )

    @on(RunStarted)
    def _run_started(self, ev: RunStarted) -> None:
        self._epochs, self._steps = ev.epochs, ev.steps_per_epoch
        self._print(f"run {ev.run_name} {sentences.started(ev)}")
        if ev.world_size > 1:
            per = ev.batch_size or 0
            total = per * ev.world_size * ev.accumulate_grad_batches
            self._print(
                f"distributed: {ev.world_size} processes ({ev.backend}) on {', '.join(ev.nodes)}; batch {per} per process, {total} per optimizer step in all"
            )
        self._print(f"run directory: {ev.run_dir}")

    @on(LRChanged)
    def _lr_changed(self, ev: LRChanged) -> None:
        self._print(sentences.lr_changed(ev))

    @on(SettingChanged)
    def _setting_changed(self, ev: SettingChanged) -> None:  # a key press or an edit at resume
        self._print(sentences.setting_changed(ev, _clock(ev.time)))

    @on(CheckpointSaved)
    def _checkpoint(self, ev: CheckpointSaved) -> None:
        if ev.tag == "last" and self._held_for == (CheckpointSaved, ev.step):
            self._release(sentences.ALSO_LAST)  # the same moment's best or periodic save: one line for both
            return
        self._release()
        line = sentences.checkpoint_saved(ev)
        if ev.tag == "manual":  # the s key: when
            self._print(f"{line}, {_clock(ev.time)}")
        elif ev.tag == "last":
            self._print(line)
        else:
            self._hold(line, CheckpointSaved, ev.step)

    @on(StateChanged)
    def _state(self, ev: StateChanged) -> None:
        self._print(f"state: {sentences.state_changed(ev)}, {_clock(ev.time)}")

    @on(Stalled)
    def _stalled(self, ev: Stalled) -> None:
        self._print("\n  ".join([f"stalled: {sentences.stalled(ev)}, {_clock(ev.time)}", *ev.stack]))

    @on(Message)
    def _message(self, ev: Message) -> None:
        self._print(f"{ev.level}: {ev.text}")

    @on(Tested)
    def _tested(self, ev: Tested) -> None:
        self._print(sentences.tested(ev))

    @on(Failed)
    def _failed(self, ev: Failed) -> None:
        self._print(f"error: {sentences.failed(ev)}")

    @on(Finished)
    def _finished(self, ev: Finished) -> None:
        self._print(f"finished: {sentences.finished(ev)}")


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))
