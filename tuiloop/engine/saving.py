"""The Trainer's checkpoints: what a checkpoint holds, writing it, and restoring a run from one.

:class:`Checkpoints` is the Trainer's part that owns them. A checkpoint is made of the Trainer's
objects (model, optimizer, scheduler, the stepper's grad scaler) and of its parts' state, each
under its own keys (:data:`tuiloop.engine.checkpoint.KEYS`): the progress counters, the
end-of-epoch monitors and metrics, the problem the objective found, the learning-rate scale the
keys applied, and every rank's RNG. In a distributed run every rank enters
:meth:`Checkpoints.save` together: each one's RNG state is gathered, rank 0 alone writes, and a
barrier keeps the others from racing into the next collective while it does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from tuiloop import __version__
from tuiloop.engine import checkpoint as ckpt
from tuiloop.engine.distributed import Ranks
from tuiloop.engine.epoch_end import EpochEnd
from tuiloop.engine.events import CheckpointSaved, Event, Message
from tuiloop.engine.exceptions import ResumeError, StorageError
from tuiloop.engine.live import Live
from tuiloop.engine.objective import LossFunction, ModelLoss
from tuiloop.engine.progress import Progress
from tuiloop.engine.steering import Steering
from tuiloop.engine.step import Stepper

FILE_NAMES = {"best": "best.pt", "last": "last.pt"}  # periodic and manual ones are numbered


class Checkpoints:
    """Checkpoint state, atomic saves into ``run_dir/checkpoints`` and exact resume."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        stepper: Stepper,
        objective: LossFunction | ModelLoss,
        progress: Progress,
        ends: EpochEnd,
        steering: Steering,
        ranks: Ranks,
        emit: Callable[[Event], None],
        save_last: bool,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.stepper = stepper
        self.objective = objective
        self.progress = progress
        self.ends = ends
        self.steering = steering
        self.live: Live | None = None  # the settings changed while it trained (the Trainer's)
        self.ranks = ranks
        self.emit = emit
        self.save_last = save_last
        self.run_dir: Path | None = None  # where checkpoints/ goes (None: nowhere); the Trainer's run_dir
        # what writes there: the run's handle on it while a run's life holds the directory; else its path
        self.folder: ckpt.Folder | None = None
        self.writing = False  # a checkpoint is being written (a slow disk is not a stalled run)
        self.good: dict[str, str] = {}  # file name -> where the run was when it was written (or resumed from)
        # file name -> its last recorded save (this run's, or its log's before a resume): what the end's test checks
        self.saves: dict[str, CheckpointSaved] = {}

    def state_dict(self, rng_states: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A complete, weights_only-loadable checkpoint of the run (``rng_states``: every rank's)."""
        rng = ckpt.rng_state()
        state = {
            "model_state_dict": ckpt.unwrap(self.model).state_dict(),
            "optimizer_state_dict": self.optimizer.state_dict(),
            "scheduler_state_dict": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler_state_dict": self.stepper.state_dict(),
            **self.progress.state_dict(),
            **self.ends.state_dict(),
            "problem": self.objective.problem,
            "rng_state": rng,
            "rng_states": rng_states or [rng],
            "world_size": self.ranks.world_size,
            "lr_scale": self.steering.lr_scale,
            "settings": dict(self.live.kept) if self.live is not None else {},
            "tuiloop_version": __version__,
        }
        return {key: state[key] for key in ckpt.KEYS}

    def load_state_dict(self, state: dict[str, Any]) -> str:
        """Restore everything :meth:`state_dict` saved, for an exact resume; returns why the
        resume is not exact ('' when it is).

        Raises :class:`ResumeError` when the checkpoint belongs to another model or tracks
        another metric than this run monitors.
        """
        self.ends.check_compatible(state)
        try:
            ckpt.unwrap(self.model).load_state_dict(state["model_state_dict"])
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise ResumeError(
                f"the checkpoint holds the weights of another model: {' '.join(first[:3])}. Resume with the [model] the run was started with."
            ) from None
        try:
            self.optimizer.load_state_dict(state["optimizer_state_dict"])
        except ValueError as e:
            raise ResumeError(
                f"the checkpoint's optimizer state does not fit this optimizer ({e}). Resume with the [optimizer] the run was started with."
            ) from None
        if self.scheduler is not None and state.get("scheduler_state_dict") is not None:
            self.scheduler.load_state_dict(state["scheduler_state_dict"])
        self.stepper.load_state_dict(state.get("scaler_state_dict"))
        self.progress.load_state_dict(state)
        self.ends.load_state_dict(state)
        self.objective.problem = state.get("problem")
        self.steering.lr_scale = float(state.get("lr_scale", 1.0))
        if self.live is not None and isinstance(state.get("settings"), dict):  # ctl set, kept across a resume
            self.live.restore(state["settings"])
        ranks = self.ranks
        saved_world = state.get("world_size", 1)
        states = state.get("rng_states") or [state["rng_state"]]
        if saved_world == ranks.world_size:
            ckpt.set_rng_state(states[ranks.rank])
            return ""
        # Another world size: every rank's share of an epoch changes; go on from the same
        # fraction of the epoch. It trains on, but it is not the run that was not stopped.
        ckpt.set_rng_state(states[ranks.rank % len(states)])
        self.progress.reshard(saved_world, ranks.world_size)
        return f"this resume is not exact: the checkpoint was written by {saved_world} process(es) and this run has {ranks.world_size}, so each one's share of the data and its random draws differ"

    def save(self, *tags: str) -> Path | None:
        """Write checkpoints of the current state atomically (serialized once for all ``tags``:
        best, last, periodic, manual) and announce each; returns the last path, None without a
        run directory (and on ranks other than 0)."""
        ranks, run_dir = self.ranks, self.run_dir
        if not tags or (run_dir is None and not ranks.distributed):
            return None
        rng_states = ranks.gather(ckpt.rng_state()) if ranks.distributed else None
        path = None
        self.writing = True
        try:
            path = self._write(tags, rng_states)
        finally:
            self.writing = False
        ranks.barrier()
        return path

    def _write(self, tags: tuple[str, ...], rng_states: list[dict[str, Any]] | None) -> Path | None:
        ranks, run_dir, path = self.ranks, self.run_dir, None
        if run_dir is not None and ranks.is_main:
            data = ckpt.serialize(self.state_dict(rng_states))
            digest = ckpt.sha256(data)  # recorded with each save; a resume checks the file against it
            folder = self.folder or ckpt.PathFolder(run_dir / "checkpoints")
            monitor = self.ends.best.monitor
            metric = self.ends.last_metrics.get(monitor)
            epoch, step = self.progress.epoch, self.progress.step
            # the event names the epoch the state is in: for a save mid-epoch, the one in progress
            in_epoch = epoch + 1 if self.progress.batch_in_epoch else epoch
            for tag in tags:
                name = FILE_NAMES.get(tag) or (
                    f"epoch-{epoch:04d}.pt" if tag == "periodic" else f"manual-step{step:07d}.pt"
                )
                path = run_dir / "checkpoints" / name
                try:
                    folder.write_atomic(name, data)
                except OSError as e:  # a full disk, a read-only folder: the file before it is intact
                    raise StorageError(f"checkpoints/{name}", e) from e
                self.good[name] = self.progress.at()
                saved = CheckpointSaved(
                    tag, str(path.relative_to(run_dir)), in_epoch, step, metric, monitor, sha256=digest
                )
                self.saves[name] = saved
                self.emit(saved)
        return path

    def safe(self, error: StorageError) -> str:
        """What is safe after ``error``: the checkpoint a resume goes on from, and the fix first."""
        fix = {
            "no space left on device": "free some space",
            "disk quota exceeded": "free some space",
            "the file system is read-only": "make the run directory writable",
            "permission denied": "make the run directory writable",
        }.get(error.reason, "fix the file system")
        if "last.pt" in self.good:
            return f"the last good checkpoint is {self.good['last.pt']} (last.pt): {fix}, then resume from it"
        if self.good:
            name = next(reversed(self.good))
            return (
                f"the last good checkpoint is {self.good[name]} ({name}), and there is no last.pt to resume from: {fix}"
            )
        return f"no checkpoint was written before it: {fix}, then start the run again"

    def restored(self, path: Path) -> None:
        """The run was resumed from ``path``: that file holds where it now stands."""
        self.good[path.name] = self.progress.at()

    def save_last_good(self) -> str | None:
        """last.pt of the state before a step that went wrong; where it is in the run directory."""
        saved = self.save("last") if self.save_last else None
        if saved is None or self.run_dir is None:  # nothing is saved without a run directory
            return None
        return str(saved.relative_to(self.run_dir))

    def save_after_crash(self) -> None:
        """After an exception in user code, keep the state of the last completed step (one
        process only: in a distributed run the other ranks are not there to save with)."""
        if self.save_last and self.run_dir is not None and not self.ranks.distributed:
            try:
                self.save("last")
            except Exception as e:  # the state itself may be what broke
                self.emit(Message("error", f"could not save last.pt after the failure: {e}"))
