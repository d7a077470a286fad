"""How pieces of a panel share its width: whole pieces dropped, least important first, and sparklines."""

from __future__ import annotations

from rich.text import Text

SPARKS = "▁▂▃▄▅▆▇█"


def fit(pieces: list[Text], width: int, sep: str = "   ") -> Text:
    """Join pieces left to right while they fit; the rest are dropped whole (most important first)."""
    out = Text(no_wrap=True, overflow="ellipsis")
    for piece in pieces:
        extra = (len(sep) if out.plain else 0) + piece.cell_len
        if out.cell_len + extra > width:
            continue
        if out.plain:
            out.append(sep)
        out.append_text(piece)
    return out


def fit_ranked(pieces: list[tuple[int, Text]], width: int, sep: str = "  ") -> Text:
    """Like :func:`fit`, but pieces are taken by rank (0 first) until one does not fit, and shown in list order."""
    keep = by_rank([(rank, piece.cell_len) for rank, piece in pieces], width, len(sep))
    out = Text(no_wrap=True, overflow="ellipsis")
    for i, (_, piece) in enumerate(pieces):
        if i in keep:
            if out.plain:
                out.append(sep)
            out.append_text(piece)
    return out


def by_rank(sizes: list[tuple[int, int]], width: int, sep: int) -> set[int]:
    """Which of (rank, width) fit in ``width``: by rank, stopping at the first that does not."""
    keep: set[int] = set()
    used = 0
    for _, i in sorted((rank, i) for i, (rank, _) in enumerate(sizes)):
        extra = sizes[i][1] + (sep if keep else 0)
        if used + extra > width:
            break
        keep.add(i)
        used += extra
    return keep


def left_truncate(text: str, width: int) -> str:
    """``text`` cut from the left to ``width`` (a path keeps its end: the run's own name)."""
    return text if len(text) <= width else "…" + text[-(width - 1) :] if width > 1 else text[:width]


def sparkline(values: list[float], width: int, lo: float | None = None, hi: float | None = None) -> str:
    """Block characters for the last ``width`` values (low to high; ``lo``/``hi`` fix the scale)."""
    values = [v for v in values[-width:] if v == v]
    if not values:
        return ""
    lo = min(values) if lo is None else lo
    hi = max(values) if hi is None else hi
    values = [min(max(v, lo), hi) for v in values]
    span = hi - lo or 1.0
    return "".join(SPARKS[min(int((v - lo) / span * (len(SPARKS) - 1) + 0.5), len(SPARKS) - 1)] for v in values)
