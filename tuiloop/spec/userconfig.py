"""The user's own defaults for every run: ``$XDG_CONFIG_HOME/tuiloop/config.toml`` (by default
``~/.config/tuiloop/config.toml``).

It holds sections of the spec that are about the person rather than the run; today that is
``[notify]``. A spec's section overrides it key by key: a spec that sets ``on`` keeps the
config's ``urls``, and ``on = []`` silences a run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tuiloop.spec.errors import SpecError, did_you_mean, join_fix, type_name
from tuiloop.spec.load import section_values, tomllib
from tuiloop.spec.schema import NotifySpec

USER_SECTIONS = ("notify",)  # the sections config.toml may hold


def config_path() -> Path:
    """Where the user's config file is (XDG_CONFIG_HOME respected)."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    return (Path(base) if os.path.isabs(base) else Path.home() / ".config") / "tuiloop" / "config.toml"


def read_config(path: Path | None = None) -> dict[str, Any]:
    """The config file's tables (empty when there is none); raises :class:`SpecError` naming the file."""
    path = path or config_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(str(path), f"cannot read tuiloop's config file ({e})", "Fix or remove it.") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(str(path), f"not valid TOML: {e}", "Fix the syntax at that line.") from None
    for name, table in raw.items():
        if name not in USER_SECTIONS:
            raise SpecError(
                f"{path}, [{name}]",
                f"'{name}' is not a section of tuiloop's config file",
                join_fix(
                    did_you_mean(name, USER_SECTIONS), f"It holds {', '.join('[' + s + ']' for s in USER_SECTIONS)}."
                ),
            )
        if not isinstance(table, dict):
            raise SpecError(f"{path}, {name}", f"'{name}' must be a table, got {type_name(table)}")
    return raw


def notify_settings(spec_table: dict[str, Any] | None, path: Path | None = None) -> NotifySpec | None:
    """What a run tells, and how: the config file's ``[notify]`` with the spec's ``[notify]``
    (``spec_table``, validated with the spec) over it key by key; None when neither has one."""
    path = path or config_path()
    user = read_config(path).get("notify")
    if user is None and spec_table is None:
        return None
    section_values("notify", user or {}, str(path))  # the config's own mistakes name the config file
    return NotifySpec(**section_values("notify", {**(user or {}), **(spec_table or {})}, "spec"))
