"""Small Textual widgets of the monitor: a text panel drawn at its own size, the stop dialog."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Static

Builder = Callable[[int, int], Text]


class Panel(Widget):
    """Shows ``build(width, height)``: the text is made for the size it gets, so a resize redraws it."""

    def __init__(self, build: Builder, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.build = build
        self._shown: Text | None = None

    def update(self, force: bool = False, layout: bool = False) -> None:
        """Redraw if the text would differ from what is on screen (most panels change rarely)."""
        size = self.content_size
        if force or self._shown is None or self.build(size.width, size.height) != self._shown:
            self.refresh(layout=layout)

    def render(self) -> Text:
        size = self.content_size
        self._shown = self.build(size.width, size.height)
        return self._shown

    def get_content_height(self, container, viewport, width: int) -> int:  # type: ignore[no-untyped-def]
        """For ``height: auto``: as many lines as the text has at this width."""
        return max(len(self.build(width, viewport.height).plain.splitlines()), 1)


class ConfirmStop(ModalScreen[bool]):
    """Asks before stopping: y (or enter) stops, n (or escape) goes back to the monitor."""

    BINDINGS = [
        Binding("y", "confirm", "Stop the run"),
        Binding("enter", "confirm", show=False),
        Binding("n", "cancel", "Keep training"),
        Binding("escape", "cancel", show=False),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static("[b]Stop the run?[/b]", id="dialog-title")
            yield Static("It finishes the current step, saves checkpoints/last.pt, writes summary.json and exits.")
            yield Static("[b reverse] y [/] stop    [b reverse] n [/] keep training", id="dialog-keys")

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)
