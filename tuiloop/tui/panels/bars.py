"""The full-width lines of the monitor: the title bar, the two progress lines, the key bar."""

from __future__ import annotations

from rich.text import Text

from tuiloop.engine import fmt
from tuiloop.tui.model import MonitorModel
from tuiloop.tui.panels.fit import fit, left_truncate

STATE_STYLE = {
    "starting": ("STARTING", "bold black on yellow"),
    "running": ("RUNNING", "bold black on green"),
    "paused": ("PAUSED", "bold black on yellow"),
    "stalled": ("STALLED", "bold white on dark_orange3"),
    "stopping": ("STOPPING", "bold white on dark_orange3"),
    "completed": ("COMPLETED", "bold black on green"),
    "early_stopped": ("EARLY STOPPED", "bold black on cyan"),
    "stopped": ("STOPPED", "bold white on blue"),
    "suspended": ("SUSPENDED", "bold black on magenta"),
    "failed": ("FAILED", "bold white on red"),
    "forced": ("FORCED", "bold white on red"),
    "crashed": ("CRASHED", "bold white on red"),
}
ENDED_STYLE = {
    "completed": "bold green",
    "early_stopped": "bold cyan",
    "stopped": "bold blue",
    "suspended": "bold magenta",
    "failed": "bold red",
    "forced": "bold red",
    "crashed": "bold red",
}


def state_badge(model: MonitorModel) -> Text:
    label, style = STATE_STYLE.get(model.state, (model.state.upper(), "bold reverse"))
    return Text(f" {label} ", style=style)


def title_text(model: MonitorModel, width: int, read_only: bool = False) -> Text:
    """Run name, state, device: the top line."""
    s = model.started
    pieces = [Text("tuiloop", style="bold"), state_badge(model)]
    pieces.append(Text(model.run_name or "(waiting for the run to start)", style="bold"))
    if s is not None:
        processes = f" x{s.world_size} ({s.backend})" if s.world_size > 1 else ""
        pieces.append(Text(s.device_name + processes, style="magenta"))
        about = [f"{s.num_params:,} params"] if s.num_params else []
        about += [s.problem] if s.problem not in ("unknown", "other") else []
        if about:
            pieces.append(Text(" · ".join(about), style="dim"))
    if read_only:
        pieces.append(Text("read-only", style="bold italic"))
    return fit(pieces, width, "  ")


def _bar(done: float, width: int, style: str = "green") -> Text:
    done = min(max(done, 0.0), 1.0)
    full = int(done * width)
    text = Text("━" * full, style=style)
    text.append("━" * (width - full), style="grey30")
    return text


def progress_text(model: MonitorModel, now: float, width: int) -> Text:
    """Epoch x/N with a bar, step in epoch, ETA, samples/s (and tokens/s); then the run directory or the ending."""
    s = model.started
    lines = []
    if s is None:
        since = f" {fmt.clock(now - model.phase_since)}" if model.phase and model.phase_since is not None else ""
        first = Text(
            f"starting: {model.phase}…{since}" if model.phase else "waiting for the training process to start…",
            style="yellow",
        )
        if model.over:
            first = Text(model.state_reason or model.state, style="bold red")
    else:
        epoch = (min(model.epoch, s.epochs) if s.epochs else model.epoch) if not model.over else model.epochs_done
        spe = s.steps_per_epoch
        if s.epochs:
            frac = (
                model.epochs_done if model.over else model.epoch - 1 + (model.step_in_epoch / spe if spe else 0)
            ) / s.epochs
            pieces = [Text(f"epoch {epoch}/{s.epochs} ", style="bold") + _bar(frac, max(8, min(24, width // 6)))]
        else:  # a tracked loop that did not say how many epochs: no bar to fill
            pieces = [Text(f"epoch {epoch}", style="bold")]
        if model.phase and not model.over:
            pieces.append(Text(f"{model.phase}…", style="yellow"))
        if spe and not model.over:
            pieces.append(Text(f"step {model.step_in_epoch}/{spe}"))
        eta = model.eta(now)
        if model.state == "paused":
            pieces.append(Text("ETA (paused)", style="yellow"))
        elif eta is not None:
            pieces.append(Text(f"ETA {fmt.clock(eta)}"))
        if model.stop_after_epoch and not model.over:
            pieces.append(Text(f"stops after epoch {model.epoch}", style="bold magenta"))
        if model.samples_per_s is not None and not model.over:
            pieces.append(Text(f"{model.samples_per_s:,.0f} samples/s"))
            if model.tokens_per_s is not None:
                pieces.append(Text(f"{model.tokens_per_s:,.0f} tokens/s"))
        wall = model.wall_time(now)
        if wall is not None:  # training time leaves out pauses and start-up; wall time does not
            pieces.append(Text(f"train {fmt.clock(model.training_time(now))} · wall {fmt.clock(wall)}", style="dim"))
        pieces.append(Text(f"global step {model.step:,}", style="dim"))
        first = fit(pieces, width)
    lines.append(first)
    lines.append(status_line(model, width))
    return Text("\n").join(lines)


def status_line(model: MonitorModel, width: int) -> Text:
    """Second progress line: how the run ended and how to leave, or where its directory is."""
    if model.over:
        label = STATE_STYLE.get(model.state, (model.state,))[0].lower()
        hint = Text("  (q: leave)", style="dim")
        text = Text(
            f"{label}" + (f" ({model.state_reason})" if model.state_reason else ""),
            style=ENDED_STYLE.get(model.state, "bold"),
        )
        text.truncate(max(width - hint.cell_len, 1), overflow="ellipsis")
        return text + hint
    where = left_truncate(model.run_dir or "", max(width - 9, 10))
    return Text.assemble(("run dir ", "dim"), (where, ""), no_wrap=True)


def keys_text(keys: list[tuple[str, str]], width: int) -> Text:
    """The key bar: ``key label`` pairs in order while they fit."""
    out = Text(no_wrap=True)
    for key, label in keys:
        piece = Text.assemble((key, "bold reverse"), f" {label}  ")
        if out.cell_len + piece.cell_len > width:
            break
        out.append_text(piece)
    return out
