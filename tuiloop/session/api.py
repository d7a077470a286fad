"""``tuiloop.Trainer``: the engine's Trainer, which with a ``run_dir`` trains inside a full run directory."""

from __future__ import annotations

import time

from tuiloop.engine import trainer as engine
from tuiloop.engine.events import Finished
from tuiloop.rundir.layout import CHECKPOINTS, is_run_dir, update_info, who
from tuiloop.rundir.lock import RunIsLive, RunLock


class Trainer(engine.Trainer):
    """The training loop on your objects (see :class:`tuiloop.engine.trainer.Trainer`).

    Given a ``run_dir``, :meth:`run` makes it a complete run directory, as ``tuiloop run`` does:
    run.json, events.jsonl, checkpoints, summary.json, and the control socket, so ``tuiloop
    attach RUN_DIR`` watches and steers it live and ``tuiloop show`` opens it afterwards. The
    directory is created if needed; one that held an earlier run is continued (its event log
    appended). Ctrl+C stops gracefully, a second one forces, when run from the main thread.
    """

    def run(self) -> Finished:
        if self.run_dir is None:
            return super().run()
        from tuiloop.session.run import run_in

        run_dir = self.run_dir.resolve()
        fresh = not is_run_dir(run_dir)
        (run_dir / CHECKPOINTS).mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            lock = RunLock.acquire(run_dir)
        except RunIsLive:
            raise RuntimeError(
                f"{run_dir} is a live run (another process trains in it); watch it with tuiloop attach {run_dir}, or pass another run_dir"
            ) from None
        if fresh:
            try:
                update_info(
                    run_dir,
                    name=self.opt.run_name if self.opt.run_name != "run" else run_dir.name,
                    started=time.time(),
                    **who(),
                )
            except BaseException:
                lock.release()
                raise
        return run_in(run_dir, lock, self, None, [], handle_signals=True)
