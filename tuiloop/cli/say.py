"""What every subcommand prints for its user on stderr."""

from __future__ import annotations

import sys


def error(text: str) -> None:
    """One ``tuiloop: error: ...`` line (the text says what was wrong and how to fix it)."""
    print(f"tuiloop: error: {text}", file=sys.stderr)


def some(problems: list[str], shown: int = 3) -> str:
    """The first few of ``problems``, and how many more there are."""
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more
