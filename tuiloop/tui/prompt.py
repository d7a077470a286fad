"""The monitor's ``:`` prompt: one line of ``KEY=VALUE`` settings for the live run, as
``tuiloop ctl RUN set`` takes them.

The line is checked as ``ctl set`` checks it (:func:`tuiloop.rundir.live_settings.settings_for`:
the resume rule, the spec's types and ranges, did-you-mean) before anything is sent: a key that
is unknown or may not change live is told at once in the prompt, which stays open to fix it.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from tuiloop.spec.errors import SpecError

Check = Callable[[list[str]], dict[str, Any]]  # KEY=VALUE items -> the settings to send; raises SpecError
HINT = "KEY=VALUE ... as tuiloop ctl RUN set takes them (optimizer.lr=1e-4 run.epochs=300); Enter sends, Escape cancels"


class SettingsPrompt(ModalScreen["dict[str, Any] | None"]):
    """One line at the bottom of the screen; dismissed with the checked settings, or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, check: Check) -> None:
        super().__init__()
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt"):
            yield Static(HINT, id="prompt-says")
            yield Input(placeholder="optimizer.lr=1e-4", id="prompt-line")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if not text:
            self.dismiss(None)
            return
        try:
            settings = self.check(shlex.split(text))
        except ValueError as e:  # shlex: an unclosed quote
            self._say(f"cannot read the line: {e}")
            return
        except SpecError as e:
            self._say(str(e))
            return
        self.dismiss(settings)

    def _say(self, text: str) -> None:
        says = self.query_one("#prompt-says", Static)
        says.update(Text(text))  # not markup: a message names [sections]
        says.add_class("refused")

    def action_cancel(self) -> None:
        self.dismiss(None)
