"""Every key of the monitor in one table: the footer's bindings and the ``?`` screen's rows.

The keys that steer the run are written once, in the table of commands
(:data:`~tuiloop.engine.commands.COMMANDS`: key, footer label, help, who obeys it, whether it
asks first); a row here only places them. The other rows change the view or leave the monitor.
docs/commands.md's table of keys lists every key shown here (tests/test_readme.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding, BindingType

from tuiloop.engine.commands import COMMAND


@dataclass(frozen=True)
class Key:
    """One row of the ``?`` screen and the bindings behind it."""

    keys: str  # as the ``?`` screen writes them ("": a binding the screen does not list)
    help: str
    bindings: tuple[Binding, ...] = ()
    first: bool = False  # the footer shows it before the other rows, so it fits on a narrow terminal


def steering(*names: str, also: tuple[Binding, ...] = (), first: bool = False) -> Key:
    """The row of the commands ``names``: their keys side by side, their one help line."""
    commands = [COMMAND[name] for name in names]
    if len({c.help for c in commands}) != 1:
        raise ValueError(f"commands sharing a row share its help line: {names}")
    bindings = tuple(Binding(c.key, c.name, c.label, key_display=c.shown or None) for c in commands)
    keys = dict.fromkeys(c.shown or c.key for c in commands)  # pause and resume share p
    return Key(" / ".join(keys), commands[0].help, bindings + also, first)


KEYS = (
    steering("pause", "resume", first=True),
    steering("save", first=True),
    steering("stop", also=(Binding("q", "leave", "Leave"),), first=True),  # q leaves once the run is over
    Key(
        "d",
        "detach: close the monitor, the run goes on (tuiloop attach brings it back)",
        (
            Binding("d", "detach", "Detach"),
            Binding("d", "leave", "Leave", show=False),
            Binding("enter", "leave", "Leave", show=False),
        ),
        first=True,
    ),
    steering("stop_after_epoch", "go_on"),
    steering("lr_down", "lr_up"),
    steering("suspend"),
    Key(
        ":",
        "change settings of the live run from its next step: KEY=VALUE as tuiloop ctl RUN set takes them",
        (Binding("colon", "settings", "Set", key_display=":"),),
    ),
    Key(
        "R",
        "resume a suspended run, exactly where it stopped",
        (Binding("R", "resume_run", "Resume", key_display="R"),),
        first=True,
    ),
    Key(
        "o",
        "the run's own output: what your code prints and warns, and the other ranks' logs",
        (Binding("o", "output", "Output"),),
    ),
    Key("t", "every validation as a table", (Binding("t", "epochs", "Epochs"),)),
    Key(
        "r / l",
        "loss plot: the raw min-max band on or off / a log y axis",
        (Binding("r", "toggle_raw", "Raw"), Binding("l", "toggle_log", "Log y")),
    ),
    Key("z", "loss plot: the whole run, the last 10%, the current epoch", (Binding("z", "zoom", "Zoom"),)),
    Key("x", "loss plot x axis: epochs, steps, wall time", (Binding("x", "x_axis", "X axis"),)),
    Key("PgUp PgDn ↑ ↓", "scroll the log, the output, the table (Home/End: first/last)"),  # the panes' own keys
    Key(
        "Ctrl+C",
        "stop; a second one forces an exit without saving (in attach: detach)",
        (Binding("ctrl+c", "interrupt", "Stop", show=False, priority=True),),
    ),
    Key("?", "this list; escape closes it", (Binding("question_mark", "keys", "Keys", key_display="?"),), first=True),
    Key("", "", (Binding("ctrl+q", "detach", show=False, priority=True),)),  # Textual's quit key: detach, never kill
)


def bindings() -> list[BindingType]:
    """The app's bindings: the first rows' before the others, each row's in its order (the footer's order)."""
    rows = [k for k in KEYS if k.first] + [k for k in KEYS if not k.first]
    return [b for row in rows for b in row.bindings]
