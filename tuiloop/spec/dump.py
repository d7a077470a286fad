"""Writing a spec back as TOML (the resolved spec saved in each run directory)."""

from __future__ import annotations

import json
import math
from typing import Any


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def dump_toml(data: dict[str, dict[str, Any]]) -> str:
    """TOML text for a spec: one table per section, scalar and inline values inside."""
    parts = []
    for section, table in data.items():
        lines = [f"[{_key(section)}]"] + [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
