"""The Trainer's checkpoints: what a checkpoint holds, writing it, and restoring a run from one.

A mixin of :class:`tuiloop.engine.trainer.Trainer` (it uses the trainer's model, optimizer,
scheduler, stepper, monitors and counters). In a distributed run every rank enters
:meth:`Saving.save` together: each one's RNG state is gathered, rank 0 alone writes, and a
barrier keeps the others from racing into the next collective while it does.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from tuiloop.engine import checkpoint as ckpt
from tuiloop.engine.errors import ResumeError
from tuiloop.engine.events import CheckpointSaved, Message


class Saving:
    """Checkpoint state, atomic saves and exact resume (mixed into the Trainer)."""

    def state_dict(self, rng_states: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A complete, weights_only-loadable checkpoint of the run (``rng_states``: every rank's)."""
        t: Any = self
        rng = ckpt.rng_state()
        return {
            "model_state_dict": ckpt.unwrap(t.model).state_dict(),
            "optimizer_state_dict": t.optimizer.state_dict(),
            "scheduler_state_dict": t.scheduler.state_dict() if t.scheduler is not None else None,
            "scaler_state_dict": t.stepper.state_dict(),
            "epoch": t.epoch,
            "batch_in_epoch": t.batch_in_epoch,
            "step": t.step,
            "loss": t.last_metrics.get("val_loss", t.last_metrics.get("train_loss")),
            "metrics": dict(t.last_metrics),
            "epoch_loss_sum": t.epoch_loss_sum,
            "epoch_loss_count": t.epoch_loss_count,
            "best": t.best.state_dict(),
            "early_stopping": t.es.state_dict() if t.es else None,
            "problem": t.problem,
            "rng_state": rng,
            "rng_states": rng_states or [rng],
            "world_size": t.ranks.world_size,
            "epoch_rng_state": t.epoch_rng,
            "lr_scale": t.lr_scale,
            "tuiloop_version": _version(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore everything :meth:`state_dict` saved, for an exact resume.

        Raises :class:`ResumeError` when the checkpoint belongs to another model or tracks
        another metric than this run monitors.
        """
        t: Any = self
        t.best.check_compatible(state["best"], "[checkpoint]")
        if t.es and state.get("early_stopping"):
            t.es.check_compatible(state["early_stopping"], "[early_stopping]")
        try:
            ckpt.unwrap(t.model).load_state_dict(state["model_state_dict"])
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise ResumeError(
                f"the checkpoint holds the weights of another model: {' '.join(first[:3])}. Resume with the [model] the run was started with."
            ) from None
        try:
            t.optimizer.load_state_dict(state["optimizer_state_dict"])
        except ValueError as e:
            raise ResumeError(
                f"the checkpoint's optimizer state does not fit this optimizer ({e}). Resume with the [optimizer] the run was started with."
            ) from None
        if t.scheduler is not None and state.get("scheduler_state_dict") is not None:
            t.scheduler.load_state_dict(state["scheduler_state_dict"])
        t.stepper.load_state_dict(state.get("scaler_state_dict"))
        t.epoch, t.batch_in_epoch, t.step = state["epoch"], state["batch_in_epoch"], state["step"]
        t.epoch_loss_sum, t.epoch_loss_count = state["epoch_loss_sum"], state["epoch_loss_count"]
        t.last_metrics = dict(state.get("metrics") or {})
        t.best.load_state_dict(state["best"])
        if t.es and state.get("early_stopping"):
            t.es.load_state_dict(state["early_stopping"])
        t.problem = state.get("problem")
        t.epoch_rng = state.get("epoch_rng_state")
        t.lr_scale = float(state.get("lr_scale", 1.0))
        saved_world = state.get("world_size", 1)
        states = state.get("rng_states") or [state["rng_state"]]
        if saved_world == t.ranks.world_size:
            ckpt.set_rng_state(states[t.ranks.rank])
            return
        # Another world size: every rank's share of an epoch changes; go on from the same
        # fraction of the epoch. It trains on, but it is not the run that was not stopped.
        ckpt.set_rng_state(states[t.ranks.rank % len(states)])
        t.batch_in_epoch = t.batch_in_epoch * saved_world // t.ranks.world_size
        text = f"this resume is not exact: the checkpoint was written by {saved_world} process(es) and this run has {t.ranks.world_size}, so each one's share of the data and its random draws differ"
        t.announcements.append(Message("warning", text))
        warnings.warn(text, stacklevel=2)

    def resume(self, path: Path) -> None:
        """Continue from a checkpoint file written by this engine."""
        t: Any = self
        # On the CPU: RNG states must stay CPU tensors; load_state_dict moves the rest.
        self.load_state_dict(ckpt.load(path, map_location="cpu"))
        t.resumed_from = str(path)

    def save(self, *tags: str) -> Path | None:
        """Write checkpoints of the current state atomically (serialized once for all ``tags``:
        best, last, periodic, manual) and announce each; returns the last path, None without a
        run directory (and on ranks other than 0)."""
        t: Any = self
        if not tags or (t.run_dir is None and not t.ranks.distributed):
            return None
        rng_states = t.ranks.gather(ckpt.rng_state()) if t.ranks.distributed else None
        path = None
        if t.run_dir is not None and t.ranks.is_main:
            data = ckpt.serialize(self.state_dict(rng_states))
            metric = t.last_metrics.get(t.opt.monitor)
            for tag in tags:
                name = {"best": "best.pt", "last": "last.pt"}.get(tag) or (
                    f"epoch-{t.epoch:04d}.pt" if tag == "periodic" else f"manual-step{t.step:07d}.pt"
                )
                path = t.run_dir / "checkpoints" / name
                ckpt.save_atomic(data, path)
                t.emit(CheckpointSaved(tag, str(path.relative_to(t.run_dir)), t.epoch, t.step, metric, t.opt.monitor))
        t.ranks.barrier()
        return path

    def _save_last_good(self) -> Path | None:
        t: Any = self
        return self.save("last") if t.opt.save_last else None

    def _save_after_crash(self) -> None:
        """After an exception in user code, keep the state of the last completed step (one
        process only: in a distributed run the other ranks are not there to save with)."""
        t: Any = self
        if t.opt.save_last and t.run_dir is not None and not t.ranks.distributed:
            try:
                self.save("last")
            except Exception as e:  # the state itself may be what broke
                t.emit(Message("error", f"could not save last.pt after the failure: {e}"))


def _version() -> str:
    from tuiloop import __version__

    return __version__
