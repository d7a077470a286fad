"""``digest.json``: the digest the event writer saves beside the log, and the readers that start from it.

A view loaded from a saved digest plus the log's other lines must show exactly what a view built
from the whole log shows, wherever the saved digest was taken (mid-epoch, paused, in an earlier
session of a resumed run); a saved digest that does not fit its log is ignored.
"""

from __future__ import annotations

import io
import json
import math
import os
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from conftest import only_run, run_cli, write_spec

from tuiloop.cli.views import print_log, system_summary
from tuiloop.engine.events import (
    CheckpointSaved,
    EarlyStopUpdate,
    Event,
    Finished,
    LRChanged,
    Message,
    RunStarted,
    SettingChanged,
    Starting,
    StateChanged,
    SystemSample,
    TrainSteps,
    Validated,
)
from tuiloop.rundir import eventlog
from tuiloop.rundir.digest import DigestLoaded, load_digest
from tuiloop.rundir.digest_file import read_digest_file
from tuiloop.rundir.eventlog import EventLog, EventTail, read_events
from tuiloop.rundir.layout import DIGEST_FILE, EVENTS
from tuiloop.rundir.scan import scan
from tuiloop.tui.model import MonitorModel
from tuiloop.tui.source import RunSource

T0 = 1_700_000_000.0
SPE, PER = 12, 4  # steps per epoch, steps per TrainSteps
GiB = 1 << 30


# ---- a synthetic run with every kind of event the digest takes ---------------------------------------
def started(
    t: float, session: str, start_epoch: int = 0, start_step: int = 0, resumed_from: str | None = None
) -> RunStarted:
    return RunStarted(run_name="snap", run_dir="/runs/snap", device="cuda:0", device_name="H100", epochs=5, steps_per_epoch=SPE, batch_size=8,
                      train_size=96, val_size=32, problem="multiclass", metrics=["train_loss", "val_loss", "val_acc"], monitor="val_loss",
                      mode="min", patience=3, num_params=99, start_epoch=start_epoch, start_step=start_step, resumed_from=resumed_from,
                      session=session, time=t)  # fmt: skip


def sample(t: float, util: int) -> SystemSample:
    gpus = [
        {
            "index": 0,
            "name": "H100",
            "util": util,
            "mem_used": 10 * GiB + util,
            "mem_total": 80 * GiB,
            "temp": 60,
            "power_w": 300.5,
        }
    ]
    return SystemSample(
        cpu_percent=10.0 + util % 7,
        ram_used=4 * GiB,
        ram_total=16 * GiB,
        rss=GiB + 1000 * util,
        proc_cpu=99.0,
        torch_peak_bytes=5 * GiB + util,
        gpus=gpus,
        time=t,
    )


def session(t: float, first_step: int, last_step: int, lr: float = 0.1) -> tuple[list[Event], float]:
    """Steps ``first_step..last_step`` in flushes of PER, machine samples between them, a
    validation with its updates at each epoch's end, a pause and a changed lr in epoch 2."""
    out: list[Event] = []
    best = math.inf
    for first in range(first_step, last_step + 1, PER):
        epoch = (first - 1) // SPE + 1
        losses = [1.0 / (first + i) for i in range(PER)]
        if first == 9:
            losses[1] = float("nan")  # a NaN loss: counted, not drawn
        t += 0.5
        out.append(
            TrainSteps(
                epoch,
                first,
                losses,
                (first + PER - 2) % SPE + 1,
                lr,
                100.0 + first,
                grad_norms=[2.0 + i for i in range(PER)],
                loss_scale=1024.0,
                skipped_steps=int(first % 3 == 0),
                time=t,
            )
        )
        if first % 8 == 1:
            out.append(sample(t + 0.1, 90 + first % 9))
        step = first + PER - 1
        if step == 16:  # pause and resume in epoch 2, and a new learning rate from the keys
            out += [StateChanged("paused", step=step, time=t + 0.2), StateChanged("running", step=step, time=t + 30.0)]
            out.append(SettingChanged("optimizer.lr", lr, lr / 2, epoch, step, "key -", time=t + 30.1))
            lr /= 2
            t += 30.1
        if step % SPE == 0:
            val = 1.0 / step
            is_best = val < best
            best = min(best, val)
            t += 0.2
            out.append(
                Validated(
                    epoch, step, {"train_loss": losses[-1], "val_loss": val, "val_acc": 1 - val}, is_best, 0.1, time=t
                )
            )
            out.append(EarlyStopUpdate(epoch, "val_loss", val, best, 0, 3, False, time=t))
            if is_best:
                out.append(CheckpointSaved("best", "checkpoints/best.pt", epoch, step, val, "val_loss", time=t))
            out.append(CheckpointSaved("last", "checkpoints/last.pt", epoch, step, val, "val_loss", time=t))
            out.append(LRChanged(epoch + 1, step, lr * 0.9, lr, time=t))
            lr *= 0.9
    return out, t


def one_session() -> list[Event]:
    t = T0
    body, t = session(t + 1.0, 1, 40)  # epochs 1-3 and 4 steps of epoch 4: ends mid-epoch
    return [Starting("importing torch", time=T0), started(T0 + 1.0, "a"), Message("warning", "a warning", time=T0 + 1.5), *body,
            Finished("completed", "all epochs", 3, 40, 1 / 36, 3, "val_loss", 60.0, time=t + 1)]  # fmt: skip


def two_sessions() -> list[Event]:
    """A run that crashed at step 40 and was resumed from its checkpoint at step 24: steps 25-40 are done again."""
    first, t = session(T0 + 1.0, 1, 40)
    second, t2 = session(t + 100.0, 25, 60, lr=0.05)
    resumed = started(t + 99.0, "b", start_epoch=2, start_step=24, resumed_from="checkpoints/last.pt")
    return [started(T0, "a"), *first, Starting("loading the checkpoint", time=t + 98.0), resumed, *second,
            Finished("completed", "all epochs", 5, 60, 1 / 60, 5, "val_loss", 200.0, time=t2 + 1)]  # fmt: skip


# ---- writing and reading ---------------------------------------------------------------------------------
def write(run_dir: Path, events: list[Event], digest_at: int | None) -> None:
    """The log of ``events`` through the real writer, its digest saved after the first ``digest_at``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if digest_at is None:
        log = EventLog(run_dir, digest_every=None)
        for ev in events:
            log(ev)
        log.close()
        return
    log = EventLog(run_dir, digest_every=math.inf)  # saves at a finished event and on close only
    for ev in events[:digest_at]:
        log(ev)
    log.close()
    rest = EventLog(run_dir, digest_every=None)  # appends, keeps no digest: the saved digest stays behind
    for ev in events[digest_at:]:
        rest(ev)
    rest.close()


def load(run_dir: Path, from_digest: bool = True, expect_session: str | None = None) -> MonitorModel:
    """As the monitor loads a run: its source polled dry, every batch applied."""
    source = RunSource(run_dir)
    if not from_digest:
        source.tail = EventTail(run_dir)
    model = MonitorModel(str(run_dir), expect_session=expect_session)
    while batch := source.poll():
        model.apply_all(batch)
    return model


def picture(m: MonitorModel, now: float) -> dict[str, Any]:
    """Everything the screen shows: series (points and envelopes, via the digest), scalars, clocks, tables, log."""
    return {
        "digest": json.dumps(m.digest.to_dict(), sort_keys=True),  # NaN-safe, every series whole
        "plots": [
            (s.points(), s.envelope())
            for s in (m.train, m.val, m.lr_history, m.grad_norms, m.throughput, m.step_times, m.cpu_history)
        ],
        "scalars": (
            m.step,
            m.epoch,
            m.step_in_epoch,
            m.epochs_done,
            m.lr,
            m.samples_per_s,
            m.state,
            m.state_reason,
            m.phase,
            m.best_value,
            m.best_epoch,
            m.best_point,
            m.stop_after_epoch,
            m.loss_scale,
            m.skipped_steps,
            m.run_name,
            m.over,
            m.exit_status(),
            m.summary_line(),
        ),  # fmt: skip
        "clock": [
            m.train_time,
            m.training_time(now),
            m.seconds_per_step() or 0.0,
            m.eta(now) or 0.0,
            m.wall_time(now),
            m.last_event_time,
            m.first_event_time,
        ],
        "rows": list(m.epoch_rows),
        "early": m.early,
        "log": [(e.level, e.text, e.repeat) for e in m.log],
        "metrics": {k: (v.last, v.best, v.best_epoch, v.history.points()) for k, v in m.metrics.items()},
        "system": (
            m.system,
            system_summary(m),
            {i: (g.util.points(), g.mem_peak, g.mean_util) for i, g in m.gpus.items()},
        ),
        "events_seen": m.events_seen,
    }


def assert_same(a: MonitorModel, b: MonitorModel) -> None:
    now = (b.last_event_time or T0) + 5.0
    pa, pb = picture(a, now), picture(b, now)
    assert pa.pop("clock") == pytest.approx(
        pb.pop("clock"), rel=1e-12
    )  # sums of the same time steps, grouped otherwise
    for key in pb:
        assert pa[key] == pb[key], key


def test_the_writer_saves_a_saved_digest_that_a_reader_uses(tmp_path: Path) -> None:
    events = one_session()
    write(tmp_path, events, 30)
    snap = load_digest(tmp_path)
    assert snap is not None and 0 < snap.offset < (tmp_path / EVENTS).stat().st_size and snap.lines == 30
    first = EventTail(tmp_path, from_digest=True).poll()
    assert isinstance(first[-1], DigestLoaded) and first[-1].skipped > 0
    assert not any(e.kind in ("train_steps", "system_sample") for e in first), (
        "the digested lines before the offset are not read"
    )
    assert len(first) - 1 + first[-1].skipped == 30


@pytest.mark.parametrize("make", [one_session, two_sessions])
def test_a_model_from_any_saved_digest_equals_the_model_from_the_whole_log(tmp_path: Path, make: Any) -> None:
    """Every cut: mid-epoch, paused, right after a validation, before and after a resume."""
    events = make()
    write(tmp_path / "full", events, None)
    full = load(tmp_path / "full", from_digest=False)
    assert full.step == events[-1].step and full.train.count > 0 and full.system_samples > 0
    for k in range(1, len(events) + 1):
        run_dir = tmp_path / f"cut-{k}"
        write(run_dir, events, k)
        assert load_digest(run_dir) is not None
        assert_same(load(run_dir), full)


def test_a_resumed_run_drops_the_steps_done_again_once(tmp_path: Path) -> None:
    events = two_sessions()
    resume_at = next(i for i, e in enumerate(events) if isinstance(e, RunStarted) and e.resumed_from)
    full_dir = tmp_path / "full"
    write(full_dir, events, None)
    full = load(full_dir, from_digest=False, expect_session="b")
    xs, _ = full.train.points()
    assert xs == sorted(set(xs)) and xs[-1] == 60 and full.step == 60, (
        "steps 25-40 of the crashed session are gone, once"
    )
    for k in (resume_at, resume_at + 1, resume_at + 5):  # just before the resume, right after it, after new steps
        write(tmp_path / f"cut-{k}", events, k)
        model = load(tmp_path / f"cut-{k}", expect_session="b")
        assert_same(model, full)


def test_a_resumed_writer_starts_from_the_saved_digest_and_reads_only_the_lines_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = two_sessions()
    resume_at = next(i for i, e in enumerate(events) if isinstance(e, RunStarted) and e.resumed_from)
    log = EventLog(tmp_path, digest_every=5.0)  # the first session saves every 5 s of its clock, then crashes
    for ev in events[: resume_at - 1]:
        log(ev)
    log._file.close()  # killed: no save at the end
    saved = read_digest_file(tmp_path)
    assert saved is not None
    after = (tmp_path / EVENTS).read_bytes()[saved["offset"] :].count(b"\n")
    assert after > 0, "some lines were written after the last save"
    decoded = []
    real = eventlog.decode
    monkeypatch.setattr(eventlog, "decode", lambda line: decoded.append(line) or real(line))
    second = EventLog(tmp_path)  # the resumed process
    assert len(decoded) == after
    monkeypatch.undo()
    for ev in events[resume_at - 1 :]:
        second(ev)
    second.close()
    write(tmp_path / "full", events, None)
    assert read_digest_file(tmp_path)["offset"] == (tmp_path / EVENTS).stat().st_size
    assert_same(load(tmp_path, expect_session="b"), load(tmp_path / "full", from_digest=False, expect_session="b"))


def test_the_writer_saves_every_period_at_the_end_of_a_session_and_on_close(tmp_path: Path) -> None:
    def offset() -> int | None:
        saved = read_digest_file(tmp_path)
        return saved["offset"] if saved else None

    size = lambda: (tmp_path / EVENTS).stat().st_size  # noqa: E731
    log = EventLog(tmp_path, digest_every=10.0)
    saves = []
    for i in range(35):  # one event a second
        log(Message("info", f"line {i}", time=T0 + i))
        if offset() == size():
            saves.append(i)
    assert saves == [10, 20, 30], "every 10 s of the events' clock"
    log(Finished("completed", "all epochs", 1, 8, None, None, None, 35.0, time=T0 + 35.5))
    assert offset() == size(), "a session's end is saved at once"
    log(Message("info", "after the end", time=T0 + 36))
    assert offset() < size()
    log.close()
    assert offset() == size(), "and what came after it, on close"


def test_runs_without_a_saved_digest_read_the_whole_log(tmp_path: Path) -> None:
    events = one_session()
    write(tmp_path, events, None)  # an older run, or a crash before the first save
    assert not (tmp_path / DIGEST_FILE).exists()
    first = EventTail(tmp_path, from_digest=True).poll()
    assert not any(isinstance(e, DigestLoaded) for e in first) and len(first) == len(events)
    assert_same(load(tmp_path), load(tmp_path, from_digest=False))


def _cut_the_log(run_dir: Path) -> None:
    data = (run_dir / EVENTS).read_bytes()
    (run_dir / EVENTS).write_bytes(data[: len(data) // 3])


def _another_runs(run_dir: Path) -> None:
    other = run_dir.parent / "other"
    events = one_session()
    write(other, [*events[:5], Message("info", "another run", time=T0), *events[5:]], 21)
    (run_dir / DIGEST_FILE).write_bytes((other / DIGEST_FILE).read_bytes())


def _edit(run_dir: Path, change: Any) -> None:
    data = json.loads((run_dir / DIGEST_FILE).read_text())
    change(data)
    (run_dir / DIGEST_FILE).write_text(json.dumps(data))


DAMAGE = {
    "garbage": lambda d: (d / DIGEST_FILE).write_bytes(b"\x00\xffnot json"),
    "cut short": lambda d: (d / DIGEST_FILE).write_bytes((d / DIGEST_FILE).read_bytes()[:500]),
    "empty": lambda d: (d / DIGEST_FILE).write_bytes(b""),
    "a list": lambda d: (d / DIGEST_FILE).write_text("[1, 2]"),
    "a newer format": lambda d: _edit(d, lambda s: s.update(format=99)),
    "past the end of the log": lambda d: _edit(d, lambda s: s.update(offset=s["offset"] + 10**6)),
    "not at a line's end": lambda d: _edit(d, lambda s: s.update(offset=s["offset"] - 3)),
    "a damaged series": lambda d: _edit(d, lambda s: s["digest"]["series"]["train"].update(xs="abc")),
    "a damaged scalar": lambda d: _edit(d, lambda s: s["digest"].update(step="many")),
    "a missing key": lambda d: _edit(d, lambda s: s["digest"].pop("gpus")),
    "ranges out of order": lambda d: _edit(d, lambda s: s["ranges"].reverse()),
    "ranges past the offset": lambda d: _edit(d, lambda s: s["ranges"].append([s["offset"], s["offset"] + 5, 1])),
    "kinds of a newer tuiloop": lambda d: _edit(d, lambda s: s["kinds"].append("tensor_stats")),
    "the log was cut": _cut_the_log,
    "another run's saved digest": _another_runs,
    "the log was replaced": lambda d: (d / EVENTS).write_bytes(
        (d / EVENTS).read_bytes().replace(b'"time":17', b'"time":27')
    ),  # another run of the same shape
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_saved_digest_that_does_not_fit_is_ignored(tmp_path: Path, damage: str) -> None:
    run_dir = tmp_path / "run"
    write(run_dir, one_session(), 20)
    assert load_digest(run_dir) is not None
    DAMAGE[damage](run_dir)
    assert load_digest(run_dir) is None
    # ls reads the digest's epoch alone, checked where it is used: a damaged digest still reads there
    digest_only = "damaged" in damage or "missing" in damage
    assert (read_digest_file(run_dir) is not None) == digest_only
    first = EventTail(run_dir, from_digest=True).poll()
    assert not any(isinstance(e, DigestLoaded) for e in first)
    assert_same(load(run_dir), load(run_dir, from_digest=False))
    assert scan(run_dir) == _scan_without_saved_digest(run_dir)


def _scan_without_saved_digest(run_dir: Path) -> Any:
    hidden = run_dir / "hidden.json"
    if (run_dir / DIGEST_FILE).exists():
        os.replace(run_dir / DIGEST_FILE, hidden)
    try:
        return scan(run_dir)
    finally:
        if hidden.exists():
            os.replace(hidden, run_dir / DIGEST_FILE)


@pytest.mark.parametrize("cut", [3, 20, 47, None])
def test_ls_and_show_read_the_same_with_a_saved_digest(tmp_path: Path, cut: int | None) -> None:
    events = [e for e in two_sessions() if not isinstance(e, Finished)]  # live or crashed: ls scans the log
    write(tmp_path, events, cut)
    with_digest = scan(tmp_path)
    assert with_digest == _scan_without_saved_digest(tmp_path)
    assert with_digest.done == 5 and with_digest.epochs == 5 and with_digest.best_epoch == 5
    printed = io.StringIO()
    with redirect_stdout(printed):
        print_log(tmp_path)
    hidden = tmp_path / "hidden.json"
    if cut is not None:
        os.replace(tmp_path / DIGEST_FILE, hidden)
    whole = io.StringIO()
    with redirect_stdout(whole):
        print_log(tmp_path)
    assert printed.getvalue() == whole.getvalue()
    assert "system: GPU0 H100: peak memory" in printed.getvalue() and "epoch 5/5" in printed.getvalue()


def test_show_reads_no_step_lines(tmp_path: Path) -> None:
    write(tmp_path, one_session(), None)
    events, tail = read_events(tmp_path, from_digest=True, skip=("train_steps",))
    assert events and not any(e.kind == "train_steps" for e in events) and tail.skipped == 0


# ---- a real run ---------------------------------------------------------------------------------------------
def test_a_real_run_and_its_resume_leave_a_saved_digest_that_show_uses(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUILOOP_SYSTEM_INTERVAL", "0.02")  # machine samples too
    spec = write_spec(workdir, run={"epochs": 2}, model={"delay": 0.01})  # long enough for a few samples
    done = run_cli("run", spec, "--headless", cwd=workdir)
    assert done.returncode == 0, done.stderr
    run_dir = only_run(workdir / "runs")
    saved = read_digest_file(run_dir)
    assert saved is not None and saved["offset"] == (run_dir / EVENTS).stat().st_size, (
        "saved at the end, covering the whole log"
    )
    assert_same(load(run_dir), load(run_dir, from_digest=False))

    resumed = run_cli("run", "--resume", run_dir, "--headless", "--set", "run.epochs=3", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    saved = read_digest_file(run_dir)
    assert saved is not None and saved["offset"] == (run_dir / EVENTS).stat().st_size
    model = load(run_dir)
    assert_same(model, load(run_dir, from_digest=False))
    assert model.step == 24 and model.epochs_done == 3 and model.train.count == 24

    shown = run_cli("show", run_dir, cwd=workdir)
    assert shown.returncode == 0, shown.stderr
    assert "finished: completed" in shown.stdout and model.system_samples > 0
    # show takes the machine's load from the saved digest: a marker put there comes out
    _edit(run_dir, lambda s: s["digest"].update(rss_peak=7 * GiB))
    marked = run_cli("show", run_dir, cwd=workdir)
    assert "peak RSS 7.0 GiB" in marked.stdout and marked.stdout.replace(
        "peak RSS 7.0 GiB", ""
    ) == shown.stdout.replace(_rss(shown.stdout), "")


def _rss(text: str) -> str:
    start = text.index("peak RSS ")
    return text[start : text.index(" GiB", start) + 4]
