"""How commands reach the loop, between optimizer steps: pause, resume, save, stop, suspend (stop
and free the machine, to be resumed later), stop after this epoch, halve or double the learning rate.

:class:`Steering` is the Trainer's part that obeys them; the loop asks it at step boundaries
(:meth:`Steering.handle`, :meth:`Steering.agree`) and reads its :attr:`Steering.state`. A single
process looks at its mailbox after every step. In a distributed run every rank must act at the
same step, so the ranks agree instead (:meth:`Steering.agree`), every few steps and while paused:
rank 0 brings what its control socket received and whether its log is due, any rank brings a
stop a signal asked for, and all of them apply the merged result. A long pause keeps agreeing
every half second, so no collective waits long enough to hit the NCCL or gloo timeout.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

import torch

from tuiloop.engine.commands import LR_FACTORS, Commands
from tuiloop.engine.distributed import SLOT, SLOTS, Ranks, steps_between_agreements
from tuiloop.engine.events import Event, SettingChanged, StateChanged
from tuiloop.engine.lr import scale_lr
from tuiloop.engine.progress import Progress

PAUSED_AGREE_S = 0.5


class Telemetry(Protocol):
    """What steering needs of the steps' writer (the engine's StepTelemetry; a framework
    callback's step writer): write what is buffered, restart the rate after a pause."""

    interval: float  # seconds between writes
    next_flush: float  # when the next write is due (perf_counter)

    def flush(self) -> None: ...

    def restart_clock(self) -> None: ...


class Steering:
    """Commands at step boundaries; in a distributed run, agreed by every rank.

    ``save(tag)`` writes a checkpoint (the Trainer's :meth:`~tuiloop.engine.trainer.Trainer.save`);
    the steps' telemetry is flushed before a pause, a save or a stop, so the log shows every step
    done before it.
    """

    def __init__(
        self,
        commands: Commands,
        ranks: Ranks,
        device: torch.device,
        progress: Progress,
        telemetry: Telemetry,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        emit: Callable[[Event], None],
        save: Callable[[str], object],
    ) -> None:
        self.commands = commands
        self.ranks = ranks
        self.device = device
        self.progress = progress
        self.telemetry = telemetry
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.emit = emit
        self.save = save
        self.state = "running"  # running | paused | stopping
        self.suspending = False  # a stop that frees the machine, to be resumed (status "suspended")
        self.stop_after_epoch = False
        self.stop_reason = ""  # why the loop stops: a signal's words, or the command's
        # `set`: applies settings (tuiloop.engine.live.Live.change, installed by the Trainer)
        self.change: Callable[[dict[str, Any]], None] = lambda settings: None
        self.lr_scale = 1.0  # what the - and + keys did to the spec's learning rate, all together (checkpointed)
        # the distributed agreement's schedule: steps until the next one, and the last one's time and step
        self.until_agree = 1
        self.agreed_at, self.agreed_at_step = time.perf_counter(), 0

    # ---- one process -------------------------------------------------------------------------
    def handle(self) -> None:
        """Obey queued commands at a step boundary; blocks here while paused."""
        if self.ranks.distributed:
            self.agree()
            return
        for cmd in self.commands.take():
            self.apply(cmd)
        while self.state == "paused":
            for cmd in self.commands.wait(PAUSED_AGREE_S):
                self.apply(cmd)

    def apply(self, cmd: str) -> None:
        """Act on one command (every rank acts on the same ones, in the same order)."""
        progress = self.progress
        if cmd == "pause" and self.state == "running":
            self.telemetry.flush()
            self.state = "paused"
            self.emit(StateChanged("paused", step=progress.step))
        elif cmd == "resume" and self.state == "paused":
            self.state = "running"
            self.telemetry.restart_clock()
            self.emit(StateChanged("running", step=progress.step))
        elif cmd == "save":
            self.telemetry.flush()
            self.save("manual")
        elif cmd in ("stop", "suspend") and self.state != "stopping":
            self.state = "stopping"
            self.suspending = cmd == "suspend"
            default = "suspended to disk" if self.suspending else "stopped by request"
            self.stop_reason = self.stop_reason or default  # a signal set its own
            self.emit(StateChanged("stopping", self.stop_reason, step=progress.step))
        elif cmd in ("stop_after_epoch", "go_on") and self.stop_after_epoch != (cmd == "stop_after_epoch"):
            self.stop_after_epoch = cmd == "stop_after_epoch"
            self.emit(
                SettingChanged(
                    "stop_after_epoch",
                    not self.stop_after_epoch,
                    self.stop_after_epoch,
                    progress.epoch + 1,
                    progress.step,
                    "command",
                )
            )
        elif cmd == "set":  # every rank takes rank 0's settings (its control socket received them)
            settings = self.commands.take_settings() if self.ranks.is_main else {}
            self.change(self.ranks.broadcast(settings))
        elif cmd in LR_FACTORS:
            optimizer = self.optimizer
            before = optimizer.param_groups[0]["lr"]
            scale_lr(optimizer, self.scheduler, LR_FACTORS[cmd])
            self.lr_scale *= LR_FACTORS[cmd]
            self.emit(
                SettingChanged(
                    "optimizer.lr",
                    before,
                    optimizer.param_groups[0]["lr"],
                    progress.epoch + 1,
                    progress.step,
                    f"command {cmd}",
                )
            )

    def request_stop(self, reason: str) -> None:
        """Ask the loop to stop at the next step boundary (used by signal handlers)."""
        self.stop_reason = self.stop_reason or reason
        self.commands.send("stop")

    # ---- every rank together ---------------------------------------------------------------------
    def agree(self) -> None:
        """All ranks: merge what each brings, then act on it in the same order everywhere."""
        ranks, telemetry = self.ranks, self.telemetry
        flags = self._flags()
        if ranks.is_main:
            now = time.perf_counter()
            flags[SLOT["flush"]] = int(now >= telemetry.next_flush)
            steps = self.progress.step - self.agreed_at_step
            per_step = (now - self.agreed_at) / steps if steps > 0 else 0.0
            flags[SLOT["next"]] = steps_between_agreements(per_step)
            self.agreed_at, self.agreed_at_step = now, self.progress.step
        decided = ranks.agree(flags, self.device)
        self.until_agree = max(1, decided[SLOT["next"]])
        if any(decided[SLOT[name]] for name in ("flush", "save", "pause", "stop", "suspend")):
            telemetry.flush()
            telemetry.next_flush = time.perf_counter() + telemetry.interval
        for cmd in ("save", "set", "lr_down", "lr_up", "stop_after_epoch", "go_on", "suspend", "stop", "pause"):
            if decided[SLOT[cmd]]:
                self.apply(cmd)
        while self.state == "paused":
            self._agree_paused()

    def _agree_paused(self) -> None:
        """One round while paused: rank 0 waits up to half a second for a command, the others wait in the collective."""
        flags = self._flags(wait=PAUSED_AGREE_S if self.ranks.is_main else 0.0)
        decided = self.ranks.agree(flags, self.device)
        for cmd in ("save", "set", "lr_down", "lr_up", "stop_after_epoch", "go_on", "suspend", "stop", "resume"):
            if decided[SLOT[cmd]]:
                self.apply(cmd)

    def _flags(self, wait: float = 0.0) -> list[int]:
        """This rank's commands as agreement flags (a stop from a signal on any rank counts)."""
        flags = [0] * len(SLOTS)
        for cmd in self.commands.wait(wait) if wait else self.commands.take():
            if cmd in SLOT:
                flags[SLOT[cmd]] = 1
        return flags
