"""A loop's settings as run.json keeps them: ``tuiloop.track``'s ``config``, a Trainer's arguments."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any


def config_data(config: Any) -> dict[str, Any]:
    """The config as JSON data for run.json (values JSON cannot hold are kept as text)."""
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    elif not isinstance(config, Mapping) and hasattr(config, "__dict__"):
        config = vars(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, a dataclass or a namespace, not {type(config).__name__}")
    return json.loads(json.dumps({str(k): v for k, v in config.items()}, default=str, allow_nan=True))
