"""Branching a run: ``tuiloop run --fork RUN [--from best|last|NAME]`` starts a new run directory
from a checkpoint of another run.

A fork is a copy of the parent as it was when the checkpoint was saved, then a resume of that
copy. The new directory gets the parent's event log up to the line that recorded the save (so
every view shows the whole curve, the parent's part first), the parent's spec.toml (so the
resume that follows checks and logs the edits, under the resume rules), the checkpoint as its
``last.pt`` (checked against the parent's recorded SHA-256 first) and a ``run.json`` that names
the parent and the checkpoint. The parent's directory is only read: it may even be live.
"""

from __future__ import annotations

import os
from pathlib import Path

from tuiloop.engine.events import CheckpointSaved, Message, line_prefix
from tuiloop.rundir.checkpoints import Checked, CheckpointRefused, read_checked
from tuiloop.rundir.eventlog import decode, encode
from tuiloop.rundir.handle import RunDir, RunDirError
from tuiloop.rundir.layout import CHECKPOINTS, EVENTS, RUN_INFO, SPEC, read_json_in, update_info
from tuiloop.rundir.lock import RunLock
from tuiloop.runner.facts import inherit_facts
from tuiloop.runner.spec_run import load_run_spec, new_run_dir
from tuiloop.runner.writable import remove_half_made
from tuiloop.spec import Spec, SpecError

SOURCES = {"last": "last.pt", "best": "best.pt"}


def checkpoint_name(source: str, parent: Path) -> str:
    """``--from``: last, best, or a file of the parent's checkpoints/, by its name or its path;
    a path elsewhere is refused (a fork reads only a checkpoint the parent's log recorded)."""
    if source in SOURCES:
        return SOURCES[source]
    path = Path(source)
    if len(path.parts) > 1 and Path(os.path.abspath(path)).parent != Path(os.path.abspath(parent / CHECKPOINTS)):
        raise SpecError(
            f"--from {source}",
            f"not a checkpoint of {parent.name}: a fork starts from a file of its checkpoints/ folder, "
            "whose SHA-256 the run's log recorded",
            _fork_fix(parent),
        )
    return path.name


def fork_run(parent: Path, spec: Spec, source: str = "last") -> tuple[Path, RunLock]:
    """Make the fork's run directory for ``spec`` from the checkpoint ``source`` of ``parent``
    and return it locked, ready to be resumed. Every check comes first: a refusal (exit 2)
    leaves nothing behind."""
    from tuiloop.runner import resume  # lazy: torch, for the resume rules

    where = f"--fork {parent}"
    if not (parent / RUN_INFO).is_file():
        raise SpecError(
            where, "not a tuiloop run directory (no run.json)", "Pass a run directory; `tuiloop ls` lists them."
        )
    if not (parent / SPEC).is_file():
        raise SpecError(
            where, "the run has no spec.toml (it was trained from Python)", "Fork a run started from a spec."
        )
    try:
        with RunDir.open(parent) as home:
            checked = read_checked(home, checkpoint_name(source, parent))
            history = _history(home, checked)
            parent_spec = home.read_bytes(SPEC)
            parent_info = read_json_in(home, RUN_INFO) or {}
    except RunDirError as e:
        raise SpecError(where, e.problem, f"{e.fix}.") from None
    except CheckpointRefused as e:
        raise SpecError(where, e.problem, _fork_fix(parent)) from None
    if checked.unrecorded:
        raise SpecError(where, checked.mismatch(), _fork_fix(parent))
    resume.changes(
        inherit_facts(load_run_spec(parent).raw, spec), spec.raw, where
    )  # the resume rules, before anything is made
    saved = checked.matches
    run_dir, lock = new_run_dir(spec)
    try:
        home = lock.home
        home.write_atomic(SPEC, parent_spec)  # what the resume compares the new spec with
        at = f"epoch {saved.epoch}, step {saved.step}" if saved else "a checkpoint from before hashes were logged"
        note = Message("info", f"forked from {parent.name} at {at} ({checked.name})")
        home.write_atomic(EVENTS, history + encode(note))
        with home.subdir(CHECKPOINTS) as checkpoints:
            checkpoints.write_atomic("last.pt", checked.data)
        update_info(
            home,
            forked_from={
                "run": str(parent.resolve()),
                "checkpoint": checked.name,
                "sha256": checked.sha256,
                "epoch": saved.epoch if saved else None,
                "step": saved.step if saved else None,
            },
            spec_path=parent_info.get("spec_path"),
            spec_base_dir=parent_info.get("spec_base_dir"),
        )
    except BaseException:
        lock.release()
        remove_half_made(run_dir)
        raise
    return run_dir, lock


def _history(home: RunDir, checked: Checked) -> bytes:
    """The parent's event log up to the line that recorded this save (the last record of these
    bytes); all of it if no line did (a log from before hashes were recorded)."""
    log = home.read_bytes(EVENTS)
    if checked.matches is None:
        return log if log.endswith(b"\n") or not log else log + b"\n"
    prefix, end, offset = line_prefix(CheckpointSaved.kind), 0, 0
    for line in log.splitlines(keepends=True):
        offset += len(line)
        if line.startswith(prefix):
            try:
                ev = decode(line)
            except ValueError:
                continue
            if isinstance(ev, CheckpointSaved) and ev.sha256 == checked.sha256:
                end = offset
    return log[:end]


def _fork_fix(parent: Path) -> str:
    """Fork from another checkpoint of the run: those its folder holds."""
    try:
        names = sorted(p.name for p in (parent / CHECKPOINTS).iterdir() if p.suffix == ".pt" and not p.is_symlink())
    except OSError:
        names = []
    if not names:
        return f"{parent / CHECKPOINTS} holds no other checkpoint: fork another run, or start a new one."
    return f"Fork from another checkpoint of the run: --from NAME, one of {', '.join(names)} (best and last name best.pt and last.pt)."
