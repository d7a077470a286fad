"""Where a loop tuiloop does not own writes its run: a fresh run directory, or an earlier run
continued only when asked.

``tuiloop.track`` and the framework callbacks (:mod:`tuiloop.integrations.transformers`) open
their run directory here, so they all choose it the same way:

* ``run_dir=None``: a fresh ``./runs/<name>-<timestamp>-<hex>``, made by the function a spec
  run's directory comes from (:func:`~tuiloop.rundir.layout.create_run_dir`); the name defaults
  to the script's. A script that ``tuiloop run SCRIPT.py`` starts is handed the directory
  tuiloop chose instead (:data:`RUN_DIR_ENV` in its environment; its lock in this process, or
  held by the launcher of a distributed run), once: a second run in it is refused.
* a ``run_dir`` that holds no run yet: made, owner-only, and started.
* a ``run_dir`` that holds an earlier run: continued (its log appended) only with
  ``resume=True``; otherwise :class:`RunExists` says how to choose. A script run twice with the
  same ``run_dir`` must not merge two runs into one log (W&B and TensorBoard start a new run too).
* a live one (another process holds its lock): :class:`~tuiloop.runner.life.RunInUse`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuiloop.rundir.layout import EVENTS, SUMMARY, create_run_dir, is_run_dir
from tuiloop.rundir.lock import RunLock
from tuiloop.rundir.records import read_info, read_summary
from tuiloop.runner.life import RunLife

RUNS = Path("runs")  # where run_dir=None makes a fresh run directory, as a spec's out_dir does
PathLike = str | os.PathLike[str]
RUN_DIR_ENV = "TUILOOP_RUN_DIR"  # the run directory tuiloop chose for this process (``tuiloop run SCRIPT.py``)
LOCK_HELD_ENV = "TUILOOP_LOCK_HELD"  # "1": the launcher of a distributed script run holds that directory's lock
_handed: list[RunLock] = []  # that directory's lock, held in this process by ``tuiloop _script``


def hand_over(lock: RunLock) -> None:
    """The run directory ``tuiloop run SCRIPT.py`` chose, locked, for the script this process runs."""
    _handed.append(lock)
    os.environ[RUN_DIR_ENV] = str(lock.run_dir)


class RunExists(ValueError):
    """The run directory holds an earlier run, and continuing it was not asked for."""

    def __init__(self, run_dir: Path, how: str) -> None:
        summary, _ = read_summary(run_dir)
        status = summary.get("status") if summary else None
        earlier = f"a {status} run" if status else "a run that did not finish"
        super().__init__(
            f"{run_dir} already holds {earlier}; another run in it would mix two runs in one event log. "
            f"To continue that run, pass resume=True ({how}(..., resume=True)); to start a new one, pass "
            "run_dir=None (a fresh directory under ./runs each time) or a directory that holds no run."
        )


@dataclass
class Opened:
    """A run directory locked for this process, and run.json's fields for :meth:`RunLife.start`."""

    life: RunLife
    info: dict[str, Any]  # name and start of a fresh run; a continued one keeps its own and lists this start
    continued: bool


def default_name() -> str:
    """A run's name when none is given: the script's (train.py -> train), else "run"."""
    script = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else ""
    return script if script and script not in ("-c", "-m", "__main__") else "run"


def check(run_dir: PathLike | None, resume: bool, how: str) -> None:
    """Raise :class:`RunExists` now for a ``run_dir`` that :func:`open_run` would refuse (a
    callback checks when it is made, before the model and the data are loaded)."""
    if run_dir is not None and not resume and is_run_dir(Path(run_dir)):
        raise RunExists(Path(run_dir).resolve(), how)
    if run_dir is None and resume:
        raise ValueError(
            f"resume=True continues the run in run_dir, and run_dir=None always starts a fresh one: "
            f"pass the run directory to continue ({how}(run_dir=..., resume=True))"
        )


def open_run(run_dir: PathLike | None, name: str | None, resume: bool, how: str) -> Opened:
    """Lock the run directory this loop writes (see the module's rules); ``how`` names the call
    that opens it, for the errors."""
    if run_dir is None:
        check(None, resume, how)
        handed = _open_handed(name)
        if handed is not None:
            return handed
        name = name or default_name()
        home = create_run_dir(RUNS, name)  # a fresh name: no other process can hold its lock
        life = RunLife.open(home.path, RunLock.acquire(home))
        return Opened(life, {"name": name, "started": life.started}, False)
    path = Path(run_dir).resolve()
    earlier = is_run_dir(path)
    life = RunLife.open(path, create=True)  # a live run raises RunInUse first: it is the more urgent news
    if not earlier:
        return Opened(life, {"name": name or path.name, "started": life.started}, False)
    if not resume:
        life.close()
        raise RunExists(path, how)
    info, _ = read_info(path)  # a damaged field reads as absent
    life.home.unlink(SUMMARY)  # live again: a crash from here must not read as the old ending
    resumes = [*info.get("resumes", []), life.started]
    return Opened(life, {"name": name or info.get("name") or path.name, "resumes": resumes}, True)


def _open_handed(name: str | None) -> Opened | None:
    """The run directory ``tuiloop run SCRIPT.py`` chose for this script, if it chose one."""
    where = os.environ.get(RUN_DIR_ENV)
    if not where:
        return None
    path = Path(where)
    if (path / EVENTS).exists():
        raise RuntimeError(
            f"{path}, the run directory `tuiloop run` chose for this script, holds a run already: "
            "a second run of one script needs a run_dir of its own (run_dir=...)"
        )
    if _handed:
        lock: RunLock | None = _handed.pop()
    elif os.environ.get(LOCK_HELD_ENV) == "1":  # the main rank of a distributed run: the launcher holds it
        lock = RunLock.held_elsewhere(path)
    else:
        lock = None
    life = RunLife.open(path, lock)
    info, _ = read_info(path)
    return Opened(life, {"name": name or info.get("name") or path.name, "started": life.started}, False)
