"""The live training monitor: a Textual app that tails a run's event log and sends it commands.

A reader thread parses new events a few times a second and posts them in batches; the screen
redraws at most 4 times a second from :class:`~tuiloop.tui.model.MonitorModel`. Training runs
in its own process, so the screen can never slow it down. Keys send commands over the run's
control socket (from a thread, so a stuck run cannot freeze the screen): :mod:`tuiloop.tui.steer`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from textual import events, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message

import tuiloop.tui.bindings as bindings
from tuiloop.engine import fmt, sentences
from tuiloop.engine.events import Event
from tuiloop.rundir.filesystem import unwritable
from tuiloop.rundir.liveness import frozen_for
from tuiloop.tui.figures import X_AXES, ZOOMS, View, loss_figure, lr_figure
from tuiloop.tui.model import MonitorModel
from tuiloop.tui.panels.bars import progress_text, title_text
from tuiloop.tui.panels.log import error_text, log_since
from tuiloop.tui.panels.machine import system_text
from tuiloop.tui.panels.training import early_stop_text, health_text, lr_text, metrics_text
from tuiloop.tui.plot import PlotView
from tuiloop.tui.screens import Confirm, EpochsScreen, KeysScreen, OutputScreen
from tuiloop.tui.scroll import ScrollLines
from tuiloop.tui.source import EventSource
from tuiloop.tui.steer import Commander, Resumer, RunKeys
from tuiloop.tui.widgets import KeyBar, Panel

FRAME_S = 0.25  # the screen redraws at most this often
NEWS_S = 5.0  # an ending or a stall written this long before the monitor opened is history: no bell
POLL_S = 0.2  # the reader looks for new events this often
ALIVE_S = 1.0  # and checks the training process is still there this often


@dataclass(eq=False)
class EventsArrived(Message):
    """A batch of new events from the log, in order."""

    events: list[Event]


@dataclass(eq=False)
class LinesSkipped(Message):
    """Lines of the event log the reader could not use, and why."""

    problems: list[str]


@dataclass(eq=False)
class ProcessGone(Message):
    """The training process is gone (all its events were posted before this)."""

    exit_code: int | None


class MonitorApp(RunKeys):
    """The monitor; ``run()`` returns how the user left: left, detached or forced."""

    CSS_PATH = "monitor.tcss"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = bindings.bindings()  # the key bar shows them in this order, as many as fit

    def __init__(
        self,
        source: EventSource,
        commander: Commander | None,
        run_dir: str = "",
        read_only: bool = False,
        exit_on_finish: bool = False,
        expect_session: str | None = None,
        attached: bool = False,
        resumer: Resumer | None = None,
        untracked_after: float | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.commander = None if read_only else commander
        self.read_only = read_only or commander is None
        self.exit_on_finish = exit_on_finish
        # A monitor opened with ``attach`` watches someone's run: Ctrl+C there leaves, it never stops the run.
        self.attached = attached
        self.model = MonitorModel(run_dir, expect_session=expect_session)
        self.view = View()  # how the loss plot is set up (keys r, l, z, x)
        self.resumer = None if self.read_only else resumer
        self.init_keys()
        self._drawn_version = -1
        self._plotted = -1  # the model's plot_version the plots show
        self._drawn_clock = 0.0
        self._was_over = False
        self._frozen = False  # stalled by the monitor's own judgement (the run writes nothing)
        self._keys_for = (False, False)  # paused, set to stop after the epoch: p Pause or Resume, e Stop@epoch or Go on
        self._quit_reader = threading.Event()
        self._watch_again = threading.Event()  # a resumed run has a new process: the reader watches it
        self._log_shown = (0, -1)  # (entries in the log pane, the model's log_rev then)
        self._opened = time.time()
        self._alarm = (False, False)  # (over, stalled) as the bell last saw them
        self._untracked_after = untracked_after  # a script: seconds until a run that has logged nothing says so

    # ---- layout -------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        m = self.model
        yield Panel(lambda w, h: title_text(m, w, self.read_only), id="title")
        yield Panel(lambda w, h: progress_text(m, time.time(), w), id="progress")
        with Horizontal(id="main"):
            with Vertical(id="loss-box", classes="box"):
                yield PlotView(id="loss")
                yield Panel(lambda w, h: health_text(m, w), id="health")
            with Vertical(id="side"):
                yield Panel(lambda w, h: metrics_text(m, w), id="metrics", classes="box")
                yield Panel(lambda w, h: early_stop_text(m, w), id="early", classes="box")
                yield Panel(lambda w, h: system_text(m, w), id="system", classes="box")
                with Vertical(id="lr-box", classes="box"):
                    yield Panel(lambda w, h: lr_text(m, w), id="lr-value")
                    yield PlotView(id="lr")
        yield Panel(lambda w, h: error_text(m, w, max(h, 3)), id="error", classes="box")
        yield ScrollLines(id="log", classes="box")
        yield KeyBar()

    def on_mount(self) -> None:
        titles = {
            "loss-box": "Loss",
            "metrics": "Metrics",
            "early": "Early stopping",
            "lr-box": "Learning rate",
            "log": "Log",
            "error": "Error",
            "system": "System",
        }
        for wid, title in titles.items():
            self.query_one(f"#{wid}").border_title = title
        self.query_one("#error").display = False
        self.query_one("#log").focus()
        self._redraw()
        self.set_interval(FRAME_S, self._tick)
        self._read()

    def on_unmount(self) -> None:
        self._quit_reader.set()

    # ---- reading the run ------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="reader")
    def _read(self) -> None:
        """Reader thread: poll the log, post batches; notice when the process is gone."""
        next_alive = 0.0
        gone = False
        while not self._quit_reader.is_set():
            if self._watch_again.is_set():
                self._watch_again.clear()
                gone = False
            events = self.source.poll()
            if events:
                self.post_message(EventsArrived(events))
            problems = self.source.problems()
            if problems:
                self.post_message(LinesSkipped(problems))
            now = time.monotonic()
            if not gone and now >= next_alive:
                next_alive = now + ALIVE_S
                if not self.source.alive():
                    while batch := self.source.poll():  # everything it wrote before it went
                        self.post_message(EventsArrived(batch))
                    self.post_message(ProcessGone(self.source.exit_code()))
                    gone = True
            if not events:
                self._quit_reader.wait(POLL_S)

    def on_events_arrived(self, message: EventsArrived) -> None:
        self.model.apply_all(message.events)
        self._after_change()

    def on_lines_skipped(self, message: LinesSkipped) -> None:
        for text in message.problems:
            self.model.note(time.time(), "warning", f"skipped a line of events.jsonl: {text}")

    def on_process_gone(self, message: ProcessGone) -> None:
        disk = unwritable(Path(self.model.run_dir)) if self.model.run_dir and message.exit_code else ""
        self.model.process_gone(message.exit_code, time.time(), disk)
        if self.forced:
            self.exit("forced")  # only now: the process is gone
            return
        self._after_change()

    def _show_early(self) -> None:
        """Early stopping is a spec's: a loop of the user's own or a library's stops itself."""
        started = self.model.started
        self.query_one("#early").display = started is None or started.loop == "spec"

    def _after_change(self) -> None:
        self._ring()
        self._show_early()  # at once: a frame drawn before the next redraw must not show the panel
        if (
            self.model.over and (self.exit_on_finish or self._leave_when_over) and not self.forced
        ):  # forced: leave once the process is gone
            self.exit("left")
            return
        if self.model.over != self._was_over:
            self._was_over = self.model.over
            if isinstance(self.screen, Confirm):
                self.screen.dismiss(False)
            self.refresh_bindings()
            self._redraw()
        shown = (self.model.state == "paused", self.model.stop_after_epoch)
        if shown != self._keys_for:  # p and e send the one the run's state calls for
            self._keys_for = shown
            self.refresh_bindings()

    # ---- drawing --------------------------------------------------------------------------------
    def _tick(self) -> None:
        self._judge_frozen()
        now = time.monotonic()
        if self.model.version != self._drawn_version or now - self._drawn_clock >= 1.0:
            self._redraw()
            if isinstance(self.screen, (OutputScreen, EpochsScreen)):
                self.screen.refresh_from_model()
        self._judge_untracked()  # last: a screen it pushes is drawn from the next tick on

    def _ring(self) -> None:
        """The terminal's bell when the run shown ends (or fails) or stalls, once each time; not
        for an ending or a stall the log already held when the monitor opened."""
        m = self.model
        alarm = (m.over, m.state == "stalled")
        news = (alarm[0] and not self._alarm[0]) or (alarm[1] and not self._alarm[1])
        self._alarm = alarm
        if news and (self._frozen or (m.last_event_time or time.time()) >= self._opened - NEWS_S):
            self.bell()

    def _judge_untracked(self) -> None:
        """A script that has opened no run directory by now: show its output, and the line to add."""
        m = self.model
        if self._untracked_after is None or m.started is not None or m.over:
            return
        if time.time() - self._opened < self._untracked_after:
            return
        self._untracked_after = None
        note = f"{sentences.UNTRACKED} (yet): {sentences.UNTRACKED_HINT}"
        m.note(time.time(), "warning", note)
        if not isinstance(self.screen, (Confirm, OutputScreen)):
            self.push_screen(OutputScreen(m, self.read_only, Path(m.run_dir), note=note))

    def _judge_frozen(self) -> None:
        """A live run that writes nothing, not even its machine samples, is frozen: stalled until it writes."""
        m = self.model
        quiet = frozen_for(m.last_event_time, bool(m.system_samples), time.time()) if not self.read_only else None
        if quiet is not None and m.state == "running":
            self._frozen, m.state = True, "stalled"
            m.state_reason = f"nothing written for {fmt.clock(quiet)}: the training process is frozen"
            m.version += 1
            self._ring()
        elif self._frozen and quiet is None:
            self._frozen = False
            if m.state == "stalled":
                m.state, m.state_reason = "running", ""
                m.version += 1

    def _redraw(self, force: bool = False) -> None:
        """Refresh the panels from the model (at most every FRAME_S, and on big changes)."""
        m = self.model
        replot = force or m.plot_version != self._plotted
        self._drawn_version, self._drawn_clock, self._plotted = m.version, time.monotonic(), m.plot_version
        if replot:  # else only panels changed (the clocks, a machine sample): the plots are as drawn
            loss = self.query_one("#loss", PlotView)
            loss.show(loss_figure(m, loss.content_size.width, self.view))
            lr = self.query_one("#lr", PlotView)
            lr.show(lr_figure(m, lr.content_size.width))
        self._show_early()
        error = self.query_one("#error")
        error.display = (
            m.failure is not None or m.state == "crashed" or (m.state == "failed" and m.last_error is not None)
        )
        for panel in self.screen_stack[0].query(Panel):
            panel.update(force, layout=panel.id in ("metrics", "early", "error", "health", "system"))
        if self._log_shown[1] != m.log_rev:
            log = self.query_one("#log", ScrollLines)
            first, lines = log_since(m, max(self._log_shown[0] - 1, 0))  # the last entry may have changed
            log.put(first, lines)
            self._log_shown = (log.end, m.log_rev)

    def on_resize(self, event: events.Resize) -> None:
        """Small terminals drop whole panels (numbers are never cut); plots redraw at their new width."""
        w, h = event.size
        main = self.screen_stack[0]
        main.set_class(h < 22, "short")
        main.set_class(w < 72, "narrow")
        main.set_class(w < 56, "tiny")
        self.call_after_refresh(self._redraw, True)

    # ---- keys that change the view (those that change the run: tuiloop.tui.steer) ----------------
    def action_keys(self) -> None:
        if not isinstance(self.screen, (Confirm, KeysScreen)):
            self.push_screen(KeysScreen())

    def action_output(self) -> None:
        if isinstance(self.screen, OutputScreen):
            self.screen.dismiss()
        elif not isinstance(self.screen, Confirm):
            self.push_screen(OutputScreen(self.model, self.read_only, Path(self.model.run_dir)))

    def action_epochs(self) -> None:
        if isinstance(self.screen, EpochsScreen):
            self.screen.dismiss()
        elif not isinstance(self.screen, Confirm):
            self.push_screen(EpochsScreen(self.model, self.read_only))

    def action_detach(self) -> None:
        self.exit("detached")

    def action_leave(self) -> None:
        self.exit("left")

    async def action_quit(self) -> None:  # Textual's own ctrl+q: leave, never kill the run
        self.exit("detached" if not self.model.over else "left")

    def action_toggle_raw(self) -> None:
        self.view.show_raw = not self.view.show_raw
        self._redraw(True)

    def action_toggle_log(self) -> None:
        self.view.log_y = not self.view.log_y
        self._redraw(True)

    def action_zoom(self) -> None:
        self.view.zoom = ZOOMS[(ZOOMS.index(self.view.zoom) + 1) % len(ZOOMS)]
        self._redraw(True)

    def action_x_axis(self) -> None:
        self.view.x_axis = X_AXES[(X_AXES.index(self.view.x_axis) + 1) % len(X_AXES)]
        self._redraw(True)
