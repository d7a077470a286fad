"""``tuiloop.Trainer``: the engine's Trainer, which with a ``run_dir`` trains inside a full run directory."""

from __future__ import annotations

import time

from tuiloop.engine import trainer as engine
from tuiloop.engine.events import Finished
from tuiloop.rundir.layout import is_run_dir
from tuiloop.runner.life import RunLife
from tuiloop.runner.spec_run import train_in


class Trainer(engine.Trainer):
    """The training loop on your objects (see :class:`tuiloop.engine.trainer.Trainer`).

    Given a ``run_dir``, :meth:`run` makes it a complete run directory, as ``tuiloop run`` does:
    run.json, events.jsonl, checkpoints, summary.json, and the control socket, so ``tuiloop
    attach RUN_DIR`` watches and steers it live and ``tuiloop show`` opens it afterwards. The
    directory is created if needed; one that held an earlier run is continued (its event log
    appended). Ctrl+C stops gracefully, a second one forces, when run from the main thread.
    A directory another process trains in raises :class:`~tuiloop.runner.life.RunInUse`.
    """

    def run(self) -> Finished:
        if self.run_dir is None:
            return super().run()
        run_dir = self.run_dir.resolve()
        fresh = not is_run_dir(run_dir)
        life = RunLife.open(run_dir, create=True)
        name = self.opt.run_name if self.opt.run_name != "run" else run_dir.name
        return train_in(life, self, handle_signals=True, **({"name": name, "started": time.time()} if fresh else {}))
