"""run.json and summary.json as their readers take them: every field this version knows is
checked against its declared type, and what does not fit is left out and named.

A file that cannot be read at all (cut short, NUL bytes, nested too deeply, a list where an
object belongs) reads as absent, with the reason; a field of the wrong type (a string where a
number belongs, an integer too large to be a count, a time no clock shows) is dropped with
the reason. ``ls``, ``show``, ``compare`` and the monitor say what they skipped instead of
crashing on it. Fields this version does not know (a newer tuiloop's) are kept as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuiloop.engine.json_types import field_types, kind_of, problem
from tuiloop.rundir.layout import RUN_INFO, SUMMARY

LATEST_TIME = 1e11  # seconds since 1970: the year 5138; a time beyond it is damage, and no clock can show it


@dataclass
class RunInfo:
    """The fields of run.json (each one optional), as the training process writes them."""

    pid: int
    host: str
    user: str
    argv: list[str]
    python: str
    name: str
    started: float
    session: str
    versions: dict[str, str]
    spec_path: str | None
    spec_base_dir: str | None
    resumes: list[float]
    tracked: bool


@dataclass
class Summary:
    """The fields of summary.json (each one optional), as a run's end writes them."""

    status: str
    reason: str
    epochs: int | None
    epochs_done: int
    steps: int
    monitor: str | None
    best_value: float | None
    best_epoch: int | None
    final_metrics: dict[str, float]
    wall_time_s: float
    started: float
    ended: float
    versions: dict[str, str]


TIMES = ("started", "ended", "wall_time_s")  # times and a duration: beyond any clock is damage


def read_record(path: Path, declared: type) -> tuple[dict[str, Any] | None, list[str]]:
    """The JSON object in ``path`` with the fields of ``declared`` checked, and what was wrong:
    (None, []) for a missing file, (None, [why]) for one that cannot be read. Raises
    PermissionError for a file of another user's."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, []
    except PermissionError:
        raise
    except OSError as e:
        return None, [f"{path.name} cannot be read ({e.strerror or e})"]
    try:
        data = json.loads(raw)
    except RecursionError:
        return None, [f"{path.name} is nested too deeply to read"]
    except ValueError:
        nul = " (it holds NUL bytes)" if b"\0" in raw else ""
        return None, [f"{path.name} is not JSON{nul}"]
    if not isinstance(data, dict):
        return None, [f"{path.name} holds {kind_of(data)}, not an object"]
    problems = []
    for name, hint in field_types(declared).items():
        if name in data and (wrong := problem(data[name], hint)):
            problems.append(f"{path.name}: {name} is {wrong}")
            del data[name]
    for name in TIMES:
        if name in data and not 0 <= data[name] < LATEST_TIME:  # NaN too
            problems.append(f"{path.name}: {name} is {data.pop(name)!r}, beyond any clock")
    return data, problems


def read_info(run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """run.json (empty if missing or unreadable) and what could not be read of it."""
    info, problems = read_record(run_dir / RUN_INFO, RunInfo)
    return info or {}, problems


def read_summary(run_dir: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """summary.json (None if missing or unreadable) and what could not be read of it."""
    return read_record(run_dir / SUMMARY, Summary)
