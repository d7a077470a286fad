"""A scrollable pane of text lines (the log, the run's output): long lines wrap instead of ending
in ``…``, PgUp/PgDn, the arrows, Home/End and the mouse wheel scroll back over everything kept,
and the pane follows new lines while it is at the bottom (like ``tail -f``).

Only the rows on screen are rendered, so ten thousand lines cost nothing per frame.
"""

from __future__ import annotations

from bisect import bisect_right

from rich.segment import Segment
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

MAX_ITEMS = 10_000


class ScrollLines(ScrollView, can_focus=True):
    """Items of text (each one line or several), addressed by an ever-growing index: ``put(i, texts)``
    replaces item ``i`` and everything after it, so an appended line and a changed last line
    (``x3``) are both one call."""

    DEFAULT_CSS = """
    ScrollLines {
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-gutter: stable;
        scrollbar-size-vertical: 1;
    }
    """

    def __init__(self, max_items: int = MAX_ITEMS, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.max_items = max_items
        self.first = 0  # the index of _items[0]
        self._items: list[Text] = []
        self._cells: list[list[int]] = []  # the cell length of each line of each item
        self._starts: list[int] = [0]  # the first row of each item at the fold width, and the total
        self._fold = 0
        self._cache: dict[int, list[Strip]] = {}
        self.follow = True  # at the bottom: new lines scroll into view

    @property
    def end(self) -> int:
        """The index after the last item."""
        return self.first + len(self._items)

    def put(self, index: int, texts: list[Text]) -> None:
        """Replace the items from ``index`` on with ``texts``; keep the view at the bottom if it was there."""
        cut = min(max(index - self.first, 0), len(self._items))
        del self._items[cut:], self._cells[cut:], self._starts[cut + 1 :]
        for i in [i for i in self._cache if i >= cut]:
            del self._cache[i]
        for text in texts:
            lines = text.split("\n", allow_blank=True) if "\n" in text.plain else [text]
            self._items.append(text)
            self._cells.append([line.cell_len for line in lines])
            self._starts.append(self._starts[-1] + self._rows(len(self._items) - 1))
        if len(self._items) > self.max_items * 11 // 10:  # drop the oldest tenth at once, not one per line
            drop = len(self._items) - self.max_items
            self.first += drop
            del self._items[:drop], self._cells[:drop]
            self._restart()
        self._resize()

    def clear(self) -> None:
        self.first = 0
        self.put(0, [])

    # ---- folding and drawing ----------------------------------------------------------------
    def _rows(self, i: int) -> int:
        """Rows item ``i`` takes: one per line, unless a line is wider than the pane (rare: only those are wrapped here)."""
        cells = self._cells[i]
        if self._fold <= 0 or max(cells) <= self._fold:
            return len(cells)
        return len(self._strips(i))

    def _restart(self) -> None:
        self._cache.clear()
        self._starts = [0]
        for i in range(len(self._items)):
            self._starts.append(self._starts[-1] + self._rows(i))

    def _resize(self) -> None:
        self.virtual_size = Size(self._fold, self._starts[-1])
        if self.follow:
            self.call_after_refresh(self._to_end)  # once the new size is laid out
        self.refresh()

    def _to_end(self) -> None:
        if self.follow:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self.follow = new >= self.max_scroll_y  # the user scrolled up: stay there

    def on_resize(self) -> None:
        width = self.scrollable_content_region.width
        if width != self._fold:
            self._fold = width
            self._restart()
        self._resize()

    def _strips(self, i: int) -> list[Strip]:
        strips = self._cache.get(i)
        if strips is None:
            width = max(self._fold, 1)
            text = self._items[i]
            strips = []
            console = self.app.console
            for line in text.split("\n", allow_blank=True) if "\n" in text.plain else [text]:
                parts = line.wrap(console, width, overflow="fold") if line.cell_len > width else [line]  # at words
                strips.extend(Strip(list(part.render(console, end="")), part.cell_len) for part in parts)
            self._cache[i] = strips
        return strips

    def render_line(self, y: int) -> Strip:
        row = self.scroll_offset.y + y
        width = self.scrollable_content_region.width
        if row >= self._starts[-1] or not self._items:
            return Strip.blank(width, self.rich_style)
        i = bisect_right(self._starts, row) - 1
        strips = self._strips(i)
        sub = row - self._starts[i]
        strip = strips[sub] if sub < len(strips) else Strip([Segment("")])
        return strip.crop_extend(0, width, self.rich_style).apply_style(self.rich_style)
