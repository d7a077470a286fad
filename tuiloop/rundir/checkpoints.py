"""The checkpoints of a run directory as its event log recorded them, and reading one to resume.

Every save records the file's SHA-256 in its ``checkpoint`` event. A resume reads ``last.pt``
once, through the run's handle (never through a symbolic link), and checks its bytes against
those records before anything is built, so a file that was changed, damaged or replaced since
(a flipped bit loads silently otherwise) is told apart from the one the run saved. A copy of
another checkpoint of the run (``best.pt``, ``epoch-NNNN.pt``) over ``last.pt`` matches that
checkpoint's record, so it resumes too.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field

from tuiloop.engine.events import CheckpointSaved
from tuiloop.rundir.eventlog import read_events
from tuiloop.rundir.handle import RunDir
from tuiloop.rundir.layout import CHECKPOINTS

LAST = "last.pt"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive; anything else is no checkpoint of ours


class CheckpointRefused(Exception):
    """A checkpoint a resume must not load: ``problem`` says why, ``fix`` what to do instead."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem}. {fix}")


@dataclass
class Checked:
    """A checkpoint's bytes and what the log says of them."""

    name: str  # as the log names it: checkpoints/last.pt
    data: bytes
    sha256: str
    matches: CheckpointSaved | None  # the recorded save these bytes are (None: no record of them)
    latest: CheckpointSaved | None  # the last save the log records of this file (None: none, an older log)
    others: list[tuple[str, CheckpointSaved]] = field(default_factory=list)  # other checkpoints still there

    @property
    def unrecorded(self) -> bool:
        """The log records saves of this file, and these bytes are none of them."""
        return self.matches is None and self.latest is not None

    def mismatch(self) -> str:
        """Why these bytes are not the file the run saved (for an :attr:`unrecorded` one)."""
        assert self.latest is not None
        ev = self.latest
        return (
            f"{self.name} is not the file this run saved there: its SHA-256 ({self.sha256[:12]}...) matches no save "
            f"the run's log records (the last one of it: epoch {ev.epoch}, step {ev.step}, {(ev.sha256 or '')[:12]}...), "
            "so it was changed or damaged since"
        )

    def fix(self) -> str:
        """Which other checkpoint to resume from instead."""
        if not self.others:
            return "No other checkpoint of this run is left to resume from: start a new run"
        (path, ev), more = self.others[0], [p.rsplit("/", 1)[-1] for p, _ in self.others[1:3]]
        return (
            f"Resume from another checkpoint of the run: copy it over {LAST} (cp {path} {path.rsplit('/', 1)[0]}/{LAST}, "
            f"saved at epoch {ev.epoch}{'; or ' + ', '.join(more) if more else ''}), then resume again"
        )


def recorded_saves(home: RunDir) -> list[CheckpointSaved]:
    """The checkpoint saves the run's log records, oldest first."""
    # from the saved digest: of a day-long log only the lines that are not steps or samples are read
    events, _ = read_events(home.via(), from_digest=True, skip=("train_steps", "system_sample"))
    return [e for e in events if isinstance(e, CheckpointSaved)]


def read_checked(home: RunDir, name: str = LAST) -> Checked:
    """``checkpoints/NAME``, read once and compared with what the log recorded of it. Raises
    :class:`CheckpointRefused` for a file that is missing, a symbolic link, not a regular file,
    or that the log recorded and that is now no checkpoint at all."""
    rel = f"{CHECKPOINTS}/{name}"
    saves = recorded_saves(home)
    data = _read(home, rel, saves)
    digest = hashlib.sha256(data).hexdigest()
    recorded = [e for e in saves if e.sha256]
    latest = next((e for e in reversed(recorded) if e.path == rel), None)
    matches = next((e for e in reversed(recorded) if e.sha256 == digest), None)
    checked = Checked(rel, data, digest, matches, latest, _others(home, rel, recorded))
    if checked.unrecorded and not data.startswith(ZIP_MAGIC):  # not even a checkpoint file: no need to load it
        what = "it is empty" if not data else f"its {len(data)} bytes are no checkpoint file at all"
        raise CheckpointRefused(f"{checked.mismatch()}; {what}", checked.fix())
    return checked


def _read(home: RunDir, rel: str, saves: list[CheckpointSaved]) -> bytes:
    where = home.path / rel
    fix = Checked(rel, b"", "", None, None, _others(home, rel, [e for e in saves if e.sha256])).fix()
    try:
        st = os.stat(rel, dir_fd=home.fd, follow_symlinks=False)
    except FileNotFoundError:
        raise CheckpointRefused(
            f"there is no {rel} to resume from",
            "Resume needs a run that saved its last state ([checkpoint] last = true)",
        ) from None
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(rel, dir_fd=home.fd)
        raise CheckpointRefused(
            f"{rel} is a symbolic link (to {target}), not the checkpoint this run saved there: a resume reads only the file the run wrote",
            fix,
        )
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointRefused(f"{rel} is not a regular file", fix)
    try:
        return home.read_bytes(rel)
    except OSError as e:
        raise CheckpointRefused(f"{where} cannot be read ({e.strerror or e})", fix) from None


def _others(home: RunDir, rel: str, recorded: list[CheckpointSaved]) -> list[tuple[str, CheckpointSaved]]:
    """The other checkpoints the log records that are still there, newest first (their last save)."""
    out: dict[str, CheckpointSaved] = {}
    for ev in reversed(recorded):
        if ev.path != rel and ev.path not in out and _exists(home, ev.path):
            out[ev.path] = ev
    return [(str(home.path / p), ev) for p, ev in out.items()]


def _exists(home: RunDir, rel: str) -> bool:
    name = rel.removeprefix(f"{CHECKPOINTS}/")
    if name == rel or not name or "/" in name or name.startswith("."):
        return False  # only a file of checkpoints/ itself (a log may name any path)
    try:
        return stat.S_ISREG(os.stat(rel, dir_fd=home.fd, follow_symlinks=False).st_mode)
    except (OSError, ValueError):
        return False
