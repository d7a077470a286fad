"""The monitor's other screens: a yes/no question, the list of keys (``?``), the run's own output
(``o``), the table of every validation (``t``). They read the app's model; the app tells the open
one to refresh."""

from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from tuiloop.engine.commands import LR_FACTORS
from tuiloop.rundir.layout import OUTPUT
from tuiloop.tui.bindings import KEYS
from tuiloop.tui.model import MonitorModel
from tuiloop.tui.output import OutputTail
from tuiloop.tui.panels.bars import title_text
from tuiloop.tui.panels.training import epoch_table
from tuiloop.tui.scroll import ScrollLines
from tuiloop.tui.widgets import KeyBar, Panel

OUTPUT_POLL_S = 0.5


class Confirm(ModalScreen[bool]):
    """Asks before a key changes the run: y (or enter) does it, n (or escape) goes back."""

    BINDINGS = [
        Binding("y", "confirm", "Yes"),
        Binding("enter", "confirm", show=False),
        Binding("n", "cancel", "No"),
        Binding("escape", "cancel", show=False),
    ]

    def __init__(self, title: str, body: str, yes: str, no: str = "keep training") -> None:
        super().__init__()
        self.texts = (title, body, yes, no)

    def compose(self) -> ComposeResult:
        title, body, yes, no = self.texts
        with Vertical(id="dialog"):
            yield Static(f"[b]{title}[/b]", id="dialog-title")
            yield Static(body)
            yield Static(f"[b reverse] y [/] {yes}    [b reverse] n [/] {no}", id="dialog-keys")

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)


def confirm_stop() -> Confirm:
    return Confirm(
        "Stop the run?",
        "It finishes the current step, saves checkpoints/last.pt, writes summary.json and exits.",
        "stop the run",
    )


def confirm_suspend() -> Confirm:
    return Confirm(
        "Suspend the run to disk?",
        "It saves the full state to checkpoints/last.pt and ends the training process, so the GPU and its memory are free. "
        "The monitor stays open: R resumes exactly where it stopped (later: tuiloop run --resume RUN_DIR).",
        "suspend",
    )


def confirm_lr(factor: float, lr: float | None) -> Confirm:
    what = "Halve" if factor < 1 else "Double"
    now = f" ({lr:.4g} -> {lr * factor:.4g})" if lr is not None else ""
    return Confirm(
        f"{what} the learning rate?{now}",
        "Every parameter group from the next step; the scheduler's base values are scaled too. The change is logged and kept in checkpoints.",
        what.lower() + " it",
    )


def confirmation(command: str, lr: float | None) -> Confirm:
    """The question asked before ``command`` is sent (the commands the table marks ``asks``)."""
    if command in LR_FACTORS:
        return confirm_lr(LR_FACTORS[command], lr)
    return {"stop": confirm_stop, "suspend": confirm_suspend}[command]()


class KeysScreen(ModalScreen[None]):
    """Every key of the monitor and what it does."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("question_mark", "close", show=False)]

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        dimmed = False
        for row in KEYS:
            if not row.keys:
                continue
            # dimmed where none of its actions can act now (a read-only view, a run that is over,
            # a tracked loop that does not obey the command)
            off = bool(row.bindings) and not any(self.app.check_action(b.action, ()) for b in row.bindings)
            dimmed |= off
            table.add_row(row.keys, row.help, style="dim" if off else None)
        with Vertical(id="dialog", classes="keys"):
            yield Static(
                "[b]Keys[/b]" + (" [dim](dimmed: not for this run now)[/dim]" if dimmed else ""), id="dialog-title"
            )
            yield Static(table)

    def action_close(self) -> None:
        self.dismiss()


class _Sub(Screen[None]):
    """A screen over the monitor with the monitor's title line and footer; escape goes back."""

    BINDINGS = [Binding("escape", "back", "Back")]

    def __init__(self, model: MonitorModel, read_only: bool) -> None:
        super().__init__()
        self.model, self.read_only = model, read_only

    def title_line(self) -> Panel:
        return Panel(lambda w, h: title_text(self.model, w, self.read_only), id="title")

    def action_back(self) -> None:
        self.dismiss()

    def refresh_from_model(self) -> None:
        self.query_one("#title", Panel).update()


class OutputScreen(_Sub):
    """What the user's code printed: output.log, and the other ranks' logs in a distributed run."""

    BINDINGS = [Binding("o", "back", "Back", show=False)]

    def __init__(self, model: MonitorModel, read_only: bool, run_dir: Path, note: str = "") -> None:
        super().__init__(model, read_only)
        self.note = note  # above the output: why it is shown (a script that logs nothing to tuiloop)
        self.tail = OutputTail(run_dir)
        self.kept = (run_dir / OUTPUT).exists()  # a run that printed to a terminal of its own has no output.log
        self._empty = False

    def compose(self) -> ComposeResult:
        yield self.title_line()
        if self.note:
            yield Static(Text(self.note, style="bold yellow"), id="output-note")
        with Vertical(classes="box", id="output-box"):
            yield ScrollLines(id="output")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#output-box").border_title = "Output (stdout, stderr" + (
            ", other ranks)" if self.model.started and self.model.started.world_size > 1 else ")"
        )
        self.query_one(ScrollLines).focus()
        self._poll()

    @work(thread=True, exclusive=True, group="output")
    def _poll(self) -> None:
        worker = get_current_worker()
        first = True
        while not worker.is_cancelled:
            lines = self.tail.poll()
            if lines or first:
                self.app.call_from_thread(self._add, lines, first)
                first = False
            time.sleep(OUTPUT_POLL_S)

    def _add(self, lines: list[Text], first: bool) -> None:
        view = self.query_one(ScrollLines)
        if first and not lines:
            said = (
                "(nothing printed yet)"
                if self.kept
                else "(not kept: this run prints to the terminal that started it; runs the monitor starts keep it in output.log)"
            )
            view.put(0, [Text(said, style="dim")])
            self._empty = True
            return
        if self._empty:
            view.clear()
            self._empty = False
        view.put(view.end, lines)


class EpochsScreen(_Sub):
    """Every validation of the run, one row per epoch: the history to browse."""

    BINDINGS = [Binding("t", "back", "Back", show=False)]

    def compose(self) -> ComposeResult:
        yield self.title_line()
        with Vertical(classes="box", id="epochs-box"):
            yield DataTable(id="epochs", zebra_stripes=True, cursor_type="row")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#epochs-box").border_title = "Epochs"
        self._shown: tuple = ()
        self.refresh_from_model()
        self.query_one(DataTable).focus()

    def refresh_from_model(self) -> None:
        super().refresh_from_model()
        columns, rows = epoch_table(self.model)
        table = self.query_one(DataTable)
        if tuple(columns) != self._shown:
            table.clear(columns=True)
            table.add_columns(*columns)
            self._shown = tuple(columns)
        elif table.row_count > len(rows):
            table.clear()
        at_end = table.cursor_row >= table.row_count - 1
        for row in rows[table.row_count :]:
            table.add_row(*row)
        if at_end and rows:
            table.move_cursor(row=len(rows) - 1)
