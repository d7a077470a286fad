"""What every subcommand prints for its user on stderr."""

from __future__ import annotations

import sys


def error(text: str) -> None:
    """One ``tuiloop: error: ...`` line (the text says what was wrong and how to fix it)."""
    print(f"tuiloop: error: {text}", file=sys.stderr)
