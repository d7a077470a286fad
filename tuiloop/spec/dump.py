"""Writing a spec back as TOML (the resolved spec saved in each run directory), with tomli-w.

Every valid TOML spec round-trips: non-ASCII keys and strings, dates and times, nested tables,
arrays of tables.
"""

from __future__ import annotations

from typing import Any

import tomli_w


def dump_toml(data: dict[str, Any]) -> str:
    """TOML text that ``tomllib.loads`` reads back as ``data``."""
    return tomli_w.dumps(data)
