"""What a person reads about an event: each sentence written once, for every view that prints it.

The headless run's plain lines and ``show | cat`` (:mod:`tuiloop.engine.plain`) and the monitor's
log pane (:mod:`tuiloop.tui.model`) call these; each view only adds its own frame (the plain
lines a label in front and the time of a person's action after, the log pane a time stamp and a
colour). Torch-free and UI-free, so the monitor imports it.
"""

from __future__ import annotations

from tuiloop.engine import fmt
from tuiloop.engine.events import (
    CheckpointSaved,
    EarlyStopUpdate,
    Failed,
    Finished,
    LRChanged,
    RunStarted,
    SettingChanged,
    Stalled,
    StateChanged,
    Tested,
    Validated,
)

# A last.pt written at the same step as a best or periodic save joins that save's sentence.
ALSO_LAST = " + last.pt"
_STATES = {"running": "resumed"}  # a state, as a sentence says it happened (others: its own name)
MOVING_AGAIN = "moving again after"  # the reason a stalled run is running again (the stall watch's)


def started(ev: RunStarted) -> str:
    """'started: binary on cpu, 131 parameters, 4 epochs of 8 steps'; a resume says where from first."""
    size = fmt.plural(ev.epochs, "epoch") if ev.epochs else ""  # a tracked loop may not say
    size += f" of {fmt.plural(ev.steps_per_epoch, 'step')}" if size and ev.steps_per_epoch else ""
    problem = f"{ev.problem} " if ev.problem not in ("unknown", "other") else ""  # known after the first batch
    params = f", {ev.num_params:,} parameters" if ev.num_params else ""
    what = f"{problem}on {ev.device_name}{params}" + (f", {size}" if size else "")
    if ev.resumed_from:
        return f"{resumed_at(ev)} from {ev.resumed_from}: {what}"
    return f"started: {what}"


def resumed_at(ev: RunStarted) -> str:
    """'resumed at epoch 3, step 16': where a resumed session goes on (epochs from 1)."""
    return f"resumed at epoch {ev.start_epoch + 1}, step {ev.start_step}"


def lr_changed(ev: LRChanged) -> str:
    """'learning rate 0.01 -> 0.005 (epoch 4)': the scheduler changed it."""
    return f"learning rate {fmt.lr(ev.previous)} -> {fmt.lr(ev.lr)} (epoch {ev.epoch})"


def setting_changed(ev: SettingChanged, when: str = "") -> str:
    """A setting a person changed (a key, a command, ``resume --set``): what, how, at which step
    (and ``when``, for a view without time stamps: 'step 16, 12:04:31')."""
    at = f"step {ev.step}, {when}" if when else f"step {ev.step}"
    if ev.key == "optimizer.lr" and isinstance(ev.new, (int, float)):
        return f"learning rate {fmt.lr(ev.old)} -> {fmt.lr(ev.new)} ({ev.source}, {at})"
    if ev.key == "stop_after_epoch":
        return f"stops after epoch {ev.epoch} ({at})" if ev.new else f"stop after this epoch cancelled ({at})"
    return f"{ev.key}: {ev.old!r} -> {ev.new!r} ({ev.source}, {at})"


def stalled(ev: Stalled) -> str:
    """'no step for 5:12 (stalled after 5:00), at step 120: tiny.py:245 in __getitem__' ('rank 1: ...')."""
    return (
        "" if not ev.rank else f"rank {ev.rank}: "
    ) + f"no step for {fmt.clock(ev.quiet_s)} (stalled after {fmt.clock(ev.after_s)}), at step {ev.step}: {ev.where}"


def new_best(ev: Validated, monitor: str) -> str:
    """'new best val_loss 0.0866 at epoch 3 (step 96)'."""
    return f"new best {monitor} {fmt.value(ev.metrics.get(monitor))} at epoch {ev.epoch} (step {ev.step})"


def not_finite(ev: Validated, names: list[str]) -> str:
    """'val_loss is nan at epoch 3 (step 96)': validation metrics that are not numbers."""
    what = ", ".join(f"{n} is {ev.metrics[n]}" for n in names)
    return f"{what} at epoch {ev.epoch} (step {ev.step})"


def checkpoint_saved(ev: CheckpointSaved) -> str:
    """'saved best checkpoints/best.pt  epoch 3  val_loss 0.0866'."""
    metric = f"  {ev.monitor} {fmt.value(ev.metric)}" if ev.metric is not None and ev.monitor else ""
    return f"saved {ev.tag} {ev.path}  epoch {ev.epoch}{metric}"


def tested(ev: Tested) -> str:
    """'test split on checkpoints/best.pt (epoch 3), 41 samples: test_loss 0.6971  test_acc 0.7805'."""
    weights = ev.checkpoint or "the final weights"
    samples = f", {fmt.plural(ev.samples, 'sample')}" if ev.samples is not None else ""
    values = "  ".join(f"{k} {fmt.value(v)}" for k, v in ev.metrics.items())
    return f"test split on {weights} (epoch {ev.epoch}){samples}: {values}"


def patience(ev: EarlyStopUpdate) -> str:
    """'patience 2/5': validation checks without improvement, of those allowed."""
    return f"patience {ev.counter}/{ev.patience}"


def early_stop_triggered(ev: EarlyStopUpdate) -> str:
    """Why early stopping ends the run."""
    return f"early stopping triggered: {ev.monitor} did not improve on {fmt.value(ev.best)} for {ev.counter}/{ev.patience} checks"


def state_changed(ev: StateChanged) -> str:
    """'paused at step 120', 'resumed at step 120', 'stopping at step 130 (stopped by request)'."""
    at = f" at step {ev.step}" if ev.step else ""
    name = "running again" if ev.state == "running" and ev.reason.startswith(MOVING_AGAIN) else ev.state
    return _STATES.get(name, name) + at + (f" ({ev.reason})" if ev.reason else "")


def failed(ev: Failed) -> str:
    """'ValueError: bad batch  [training, epoch 2, step 9]': the error, then where it happened."""
    return f"{ev.error}  [{ev.where}]"


def ended(ev: Finished) -> str:
    """'early stopped (val_loss did not improve for 3 checks) after 7 epochs': how a session ended."""
    return f"{ev.status.replace('_', ' ')} ({ev.reason}) after {fmt.plural(ev.epochs_done, 'epoch')}"


def finished(ev: Finished) -> str:
    """How the run ended, its length and its best check: 'completed (4 epochs done) after 4 epochs,
    32 steps in 1:05, best val_loss 0.0866 at epoch 3'."""
    best = (
        f", best {ev.monitor} {fmt.value(ev.best_value)} at epoch {ev.best_epoch}"
        if ev.best_value is not None and ev.best_epoch is not None
        else ""
    )
    return f"{ended(ev)}, {fmt.plural(ev.step, 'step')} in {fmt.clock(ev.wall_time_s)}{best}"


# A script that ``tuiloop run SCRIPT.py`` watches and that never opened its run directory.
UNTRACKED = "the script logs nothing to tuiloop"
UNTRACKED_HINT = "add `run = tuiloop.track()` to its loop (or TuiloopCallback() to its Trainer's callbacks)"
