"""Whether a run can be written where it goes, and the one paragraph a user reads when it cannot.

A resume stages its new spec.toml and run.json (:func:`stage_resume`): on a full or read-only
disk it stops before it has changed anything.

A new run checks its ``out_dir`` before anything is built (the data may take minutes to load):
a read-only or unwritable folder, a full disk and a run name too long for the file system are
found at once. What the check cannot foresee (a disk that fills in between) is met when the
run directory is made, and then nothing half-made is left behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path
from typing import Any

from tuiloop.engine.exceptions import os_reason
from tuiloop.rundir.handle import RunDir
from tuiloop.rundir.layout import RUN_INFO, SPEC, json_bytes
from tuiloop.rundir.staged import StagedFiles
from tuiloop.spec.errors import SpecError

NAME_MAX = 255  # bytes in a file name on the file systems that do not say (and on most that do)


def fix_for(error: OSError, then: str) -> str:
    """How to get past ``error`` (a full disk, a read-only folder), then ``then``."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"Free some space there, then {then}."
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"Make it writable for this user, then {then}."
    return f"Fix the file system, then {then}."


def _existing(folder: Path) -> Path:
    """``folder``, or the nearest folder above it that exists (where the run directory's parents are made)."""
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_out_dir(out_dir: Path, name: str, where: str) -> None:
    """Raise :class:`SpecError` if no run directory named ``name`` can be made in ``out_dir``;
    ``where`` is the spec file. Writes nothing."""
    here = _existing(out_dir)
    if not here.is_dir():
        raise SpecError(
            f"{where}, [run] out_dir",
            f"{here} is a file, so no run directory can be made in {out_dir}",
            "Set out_dir to a folder (for example --set run.out_dir=runs).",
        )
    folder = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-0000"  # as create_run_dir names it
    try:
        longest = int(os.pathconf(here, "PC_NAME_MAX"))
    except (OSError, ValueError):
        longest = NAME_MAX
    if len(os.fsencode(folder)) > longest:
        spare = longest - (len(os.fsencode(folder)) - len(os.fsencode(name)))
        raise SpecError(
            f"{where}, [run] name",
            f"the run directory's name would be {len(os.fsencode(folder))} bytes "
            f"({name[:20]}...-YYYYmmdd-HHMMSS-xxxx), and the file system of {here} takes at most {longest}",
            f"Use a name of at most {spare} bytes.",
        )
    problem = None
    stat = os.statvfs(here)
    if stat.f_flag & os.ST_RDONLY:
        problem = OSError(errno.EROFS, "Read-only file system", str(here))
    elif not os.access(here, os.W_OK | os.X_OK):
        problem = OSError(errno.EACCES, "Permission denied", str(here))
    elif stat.f_bavail == 0:
        problem = OSError(errno.ENOSPC, "No space left on device", str(here))
    if problem is not None:
        raise out_dir_error(where, out_dir, problem)


def out_dir_error(where: str, out_dir: Path, error: OSError) -> SpecError:
    """The paragraph for a run directory that could not be made in ``out_dir``."""
    at = f" ({error.filename})" if error.filename and Path(error.filename) != out_dir.absolute() else ""
    return SpecError(
        f"{where}, [run] out_dir",
        f"{os_reason(error)}: a run directory cannot be made in {out_dir}{at}",
        fix_for(error, "run again, or put runs elsewhere with --set run.out_dir=PATH"),
    )


def remove_half_made(run_dir: Path) -> None:
    """Remove a run directory this process has just made and that could not be completed."""
    shutil.rmtree(run_dir, ignore_errors=True)


def stage_resume(home: RunDir, spec_text: str, info: dict[str, Any]) -> StagedFiles:
    """A resumed run's spec.toml and run.json, staged; raises :class:`SpecError` if they cannot
    be written (then no file in ``run_dir`` has changed; a disk seen to be full or read-only
    is refused before a temp file is made)."""
    run_dir = home.path
    data = {SPEC: spec_text.encode(), RUN_INFO: json_bytes(info)}
    stat = os.fstatvfs(home.fd)
    if stat.f_flag & os.ST_RDONLY:
        raise resume_error(run_dir, OSError(errno.EROFS, "Read-only file system", str(run_dir / SPEC)))
    if stat.f_bfree * stat.f_frsize < sum(len(d) for d in data.values()):
        raise resume_error(run_dir, OSError(errno.ENOSPC, "No space left on device", str(run_dir / SPEC)))
    files = StagedFiles(home)
    try:
        for name, content in data.items():
            files.write(name, content)
    except OSError as e:
        raise resume_error(run_dir, e) from None
    return files


def resume_error(run_dir: Path, error: OSError) -> SpecError:
    """The paragraph for a resume that cannot write its run directory (it changed nothing)."""
    name = Path(error.filename).name if error.filename else "the run directory"
    return SpecError(
        f"--resume {run_dir}",
        f"{os_reason(error)} writing {name}; nothing in the run directory was changed",
        fix_for(error, f"resume again: tuiloop run --resume {run_dir}"),
    )
