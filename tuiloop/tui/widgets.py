"""The monitor's own widgets: a text panel drawn at its own size, and the key bar."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.geometry import Size
from textual.widget import Widget

from tuiloop.tui.panels.bars import keys_text

Builder = Callable[[int, int], Text]


def _lines(text: Text) -> int:
    return text.plain.count("\n") + 1


class Panel(Widget):
    """Shows ``build(width, height)``: the text is made for the size it gets, so a resize redraws it."""

    def __init__(self, build: Builder, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.build = build
        self._shown: Text | None = None
        self._next: tuple[Size, Text] | None = None  # built by update() for the next render

    def update(self, force: bool = False, layout: bool = False) -> None:
        """Redraw if the text would differ from what is on screen (most panels change rarely).
        ``layout``: the panel's height follows its text, so a new line count lays the screen out
        again (only then: a layout costs more than the redraw)."""
        size = self.content_size
        text = self.build(size.width, size.height)
        shown = self._shown
        if force or shown is None or text != shown:
            self._next = (size, text)
            self.refresh(layout=layout and (shown is None or _lines(text) != _lines(shown)))
        else:
            self._next = None  # a redraw still pending builds its text afresh

    def render(self) -> Text:
        size = self.content_size
        ready, self._next = self._next, None
        self._shown = ready[1] if ready is not None and ready[0] == size else self.build(size.width, size.height)
        return self._shown

    def get_content_height(self, container, viewport, width: int) -> int:
        """For ``height: auto``: as many lines as the text has at this width."""
        return max(len(self.build(width, viewport.height).plain.splitlines()), 1)


class KeyBar(Widget):
    """The keys that act now, most important first; those that do not fit are left out whole
    (docs/commands.md lists them all). Redrawn when the screen's bindings change."""

    DEFAULT_CSS = """
    KeyBar {
        height: 1;
        dock: bottom;
        background: $panel;
    }
    """

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, lambda screen: self.refresh())

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def render(self) -> Text:
        keys = [
            (self.app.get_key_display(b), b.description)
            for _, b, enabled, _ in self.screen.active_bindings.values()
            if b.show and enabled
        ]
        return keys_text(keys, self.content_size.width)
