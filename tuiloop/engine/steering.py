"""How commands reach the loop, between optimizer steps: pause, resume, save, stop, suspend (stop
and free the machine, to be resumed later), stop after this epoch, halve or double the learning rate.

A mixin of :class:`tuiloop.engine.trainer.Trainer`. A single process looks at its mailbox after
every step. In a distributed run every rank must act at the same step, so the ranks agree
instead (:meth:`Steering._agree`), every few steps and while paused: rank 0 brings what its
control socket received and whether its log is due, any rank brings a stop a signal asked for,
and all of them apply the merged result. A long pause keeps agreeing every half second, so no
collective waits long enough to hit the NCCL or gloo timeout.
"""

from __future__ import annotations

import time
from typing import Any

from tuiloop.engine.commands import LR_FACTORS
from tuiloop.engine.distributed import SLOT, SLOTS, steps_between_agreements
from tuiloop.engine.events import SettingChanged, StateChanged
from tuiloop.engine.lr import scale_lr

PAUSED_AGREE_S = 0.5


class Steering:
    """Commands at step boundaries; in a distributed run, agreed by every rank (mixed into the Trainer)."""

    # ---- one process -------------------------------------------------------------------------
    def _handle_commands(self) -> None:
        """Obey queued commands at a step boundary; blocks here while paused."""
        t: Any = self
        if t.ranks.distributed:
            self._agree()
            return
        for cmd in t.commands.take():
            self._apply(cmd)
        while t.state == "paused":
            for cmd in t.commands.wait(PAUSED_AGREE_S):
                self._apply(cmd)

    def _apply(self, cmd: str) -> None:
        t: Any = self
        if cmd == "toggle_pause":
            cmd = "resume" if t.state == "paused" else "pause"
        if cmd == "pause" and t.state == "running":
            t._flush()
            t.state = "paused"
            t.emit(StateChanged("paused", step=t.step))
        elif cmd == "resume" and t.state == "paused":
            t.state = "running"
            t._last_flush_time = time.perf_counter()
            t._samples = 0
            t.emit(StateChanged("running", step=t.step))
        elif cmd == "save":
            t._flush()
            t.save("manual")
        elif cmd in ("stop", "suspend") and t.state != "stopping":
            t.state = "stopping"
            t.suspending = cmd == "suspend"
            default = "suspended to disk" if t.suspending else "stopped by request"
            t._stop_reason = t._stop_reason or default  # a signal set its own
            t.emit(StateChanged("stopping", t._stop_reason, step=t.step))
        elif cmd == "stop_after_epoch":
            t.stop_after_epoch = not t.stop_after_epoch
            t.emit(
                SettingChanged(
                    "stop_after_epoch", not t.stop_after_epoch, t.stop_after_epoch, t.epoch + 1, t.step, "command"
                )
            )
        elif cmd in LR_FACTORS:
            before = t.optimizer.param_groups[0]["lr"]
            scale_lr(t.optimizer, t.scheduler, LR_FACTORS[cmd])
            t.lr_scale *= LR_FACTORS[cmd]
            t.emit(
                SettingChanged(
                    "optimizer.lr", before, t.optimizer.param_groups[0]["lr"], t.epoch + 1, t.step, f"command {cmd}"
                )
            )

    def request_stop(self, reason: str) -> None:
        """Ask the loop to stop at the next step boundary (used by signal handlers)."""
        t: Any = self
        t._stop_reason = t._stop_reason or reason
        t.commands.send("stop")

    # ---- every rank together ---------------------------------------------------------------------
    def _agree(self) -> None:
        """All ranks: merge what each brings, then act on it in the same order everywhere."""
        t: Any = self
        flags = self._flags()
        if t.ranks.is_main:
            now = time.perf_counter()
            flags[SLOT["flush"]] = int(now >= t._next_flush)
            steps = t.step - t._agreed_at_step
            per_step = (now - t._agreed_at) / steps if steps > 0 else 0.0
            flags[SLOT["next"]] = steps_between_agreements(per_step)
            t._agreed_at, t._agreed_at_step = now, t.step
        decided = t.ranks.agree(flags, t.device)
        t._until_agree = max(1, decided[SLOT["next"]])
        if any(decided[SLOT[name]] for name in ("flush", "save", "pause", "stop", "suspend")):
            t._flush()
            t._next_flush = time.perf_counter() + t.opt.log_interval
        for cmd in ("save", "lr_down", "lr_up", "stop_after_epoch", "suspend", "stop", "pause"):
            if decided[SLOT[cmd]]:
                self._apply(cmd)
        while t.state == "paused":
            self._agree_paused()

    def _agree_paused(self) -> None:
        """One round while paused: rank 0 waits up to half a second for a command, the others wait in the collective."""
        t: Any = self
        flags = self._flags(wait=PAUSED_AGREE_S if t.ranks.is_main else 0.0)
        decided = t.ranks.agree(flags, t.device)
        for cmd in ("save", "lr_down", "lr_up", "stop_after_epoch", "suspend", "stop", "resume"):
            if decided[SLOT[cmd]]:
                self._apply(cmd)

    def _flags(self, wait: float = 0.0) -> list[int]:
        """This rank's commands as agreement flags (a stop from a signal on any rank counts)."""
        t: Any = self
        flags = [0] * len(SLOTS)
        for cmd in t.commands.wait(wait) if wait else t.commands.take():
            if cmd == "toggle_pause":
                cmd = "resume" if t.state == "paused" else "pause"
            if cmd in SLOT:
                flags[SLOT[cmd]] = 1
        return flags
