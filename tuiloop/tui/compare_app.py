"""``tuiloop compare``: several runs on one screen, a metric by epoch and what tells them apart.

A reader thread reads every run's new events about once a second and posts them; the app
applies them to the :class:`~tuiloop.rundir.comparison.Comparison` on its own thread and redraws.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Footer

from tuiloop.rundir.comparison import Comparison, RunUpdate
from tuiloop.tui.compare_panels import metric_figure, table_text, title_text
from tuiloop.tui.plot import PlotView
from tuiloop.tui.widgets import Panel

POLL_S = 1.0  # how often the runs are read again (live ones grow; ended ones cost a stat or two)


@dataclass(eq=False)
class RunsRead(Message):
    """What one read of every run found, in the runs' order."""

    updates: list[RunUpdate]


class CompareApp(App[None]):
    """The compare screen: ``m`` shows the next metric, ``l`` a log y axis, ``q`` leaves."""

    CSS_PATH = "compare.tcss"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("m", "next_metric", "Next metric"),
        Binding("l", "toggle_log", "Log y"),
        Binding("q", "leave", "Leave"),
        Binding("ctrl+c", "leave", "Leave", show=False, priority=True),
    ]

    def __init__(self, comparison: Comparison, metric: str | None = None, poll_s: float = POLL_S) -> None:
        super().__init__()
        self.cmp = comparison
        self.metric = metric or comparison.default_metric()
        self.log_y = False
        self.poll_s = poll_s
        self._quit_reader = threading.Event()

    def compose(self) -> ComposeResult:
        yield Panel(lambda w, h: title_text(self.cmp, self.metric, w), id="title")
        with Vertical(id="plot-box", classes="box"):
            yield PlotView(id="plot")
        yield Panel(lambda w, h: table_text(self.cmp, self.metric, w, h), id="table", classes="box")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#table").border_title = "Runs and the spec values that differ"
        self._redraw()
        self._read()

    def on_unmount(self) -> None:
        self._quit_reader.set()

    @work(thread=True, exclusive=True, group="reader")
    def _read(self) -> None:
        """Reader thread: read the runs, post what it found; only the app thread applies it."""
        while not self._quit_reader.wait(self.poll_s):
            self.post_message(RunsRead(self.cmp.read()))

    def on_runs_read(self, message: RunsRead) -> None:
        if self.cmp.apply(message.updates):
            self._redraw()

    def _redraw(self, force: bool = False) -> None:
        self.query_one("#plot-box").border_title = f"{self.metric} by epoch"
        plot = self.query_one("#plot", PlotView)
        plot.show(metric_figure(self.cmp, self.metric, plot.content_size.width, self.log_y))
        for panel in self.query(Panel):
            panel.update(force, layout=panel.id == "table")

    def on_resize(self) -> None:
        self.call_after_refresh(self._redraw, True)

    def action_next_metric(self) -> None:
        names = self.cmp.metric_names()
        if not names:
            return
        i = names.index(self.metric) + 1 if self.metric in names else 0
        self.metric = names[i % len(names)]
        self._redraw(True)

    def action_toggle_log(self) -> None:
        self.log_y = not self.log_y
        self._redraw()

    def action_leave(self) -> None:
        self.exit()
