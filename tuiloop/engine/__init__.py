"""The training engine: a plain library with no UI imports; it emits events and obeys commands."""
