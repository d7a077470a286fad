"""``tuiloop compare``: runs side by side. The run directories here are written by the test (spec,
run.json, an event log, a summary; a live one holds its lock), which is all compare reads."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, spec_data
from runs_support import TUILOOP, Tmux, wait_until

from tuiloop.cli.compare import format_plain
from tuiloop.engine.events import Finished, RunStarted, TrainSteps, Validated
from tuiloop.rundir.comparison import Comparison, RunHistory, differing_keys, flatten, short_names
from tuiloop.rundir.eventlog import EventLog
from tuiloop.rundir.layout import SPEC, update_info, who, write_summary
from tuiloop.rundir.lock import RunLock
from tuiloop.spec.dump import dump_toml
from tuiloop.tui.compare_app import CompareApp
from tuiloop.tui.compare_panels import metric_figure, table_text

T0 = 1_700_000_000.0
EPOCHS = 10


def started(monitor: str = "val_loss", mode: str = "min", start_epoch: int = 0, resumed: bool = False) -> RunStarted:
    return RunStarted(
        run_name="tiny",
        run_dir="",
        device="cpu",
        device_name="cpu",
        epochs=EPOCHS,
        steps_per_epoch=8,
        batch_size=16,
        train_size=120,
        val_size=40,
        problem="multiclass",
        metrics=["train_loss", "val_loss", "val_acc"],
        monitor=monitor,
        mode=mode,
        patience=None,
        num_params=100,
        start_epoch=start_epoch,
        start_step=start_epoch * 8,
        resumed_from="checkpoints/last.pt" if resumed else None,
        time=T0,
    )


def validations(
    losses: list[float], first_epoch: int = 1, monitor: str = "val_loss", mode: str = "min", best: float | None = None
) -> list[Validated]:
    """One validation per loss (val_acc = 1 - loss/2), ``is_best`` as the engine sets it for ``monitor``."""
    out = []
    for i, loss in enumerate(losses):
        epoch = first_epoch + i
        metrics = {"train_loss": loss + 0.1, "val_loss": loss, "val_acc": 1 - loss / 2}
        value = metrics[monitor]
        is_best = best is None or (value > best if mode == "max" else value < best)
        best = value if is_best else best
        out.append(Validated(epoch, epoch * 8, metrics, is_best, 0.1, time=T0 + epoch))
    return out


def fake_run(
    out: Path,
    name: str,
    tag: str,
    losses: list[float],
    spec: dict[str, Any] | None = None,
    *,
    monitor: str = "val_loss",
    mode: str = "min",
    live: bool = False,
) -> tuple[Path, RunLock | None]:
    """A run directory as a run leaves it: finished, or live (its lock held: release it to end it)."""
    run_dir = out / f"{name}-20260101-120000-{tag}"
    run_dir.mkdir(parents=True)
    lock = RunLock.acquire(run_dir) if live else None
    data = spec_data(**(spec or {}))
    data["run"]["name"] = name
    (run_dir / SPEC).write_text(dump_toml(data), encoding="utf-8")
    update_info(run_dir, name=name, started=T0, **who())
    log = EventLog(run_dir)
    for ev in [started(monitor, mode), *validations(losses, monitor=monitor, mode=mode)]:
        log(ev)
    if not live:
        log(
            Finished(
                "completed", "all epochs done", len(losses), len(losses) * 8, None, None, monitor, 1.0, time=T0 + 99
            )
        )
        write_summary(run_dir, {"status": "completed", "epochs": EPOCHS, "epochs_done": len(losses)})
    log.close()
    return run_dir, lock


def run_async(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def wrapper(*args: object, **kwargs: object) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


# ---- the comparison without a screen ------------------------------------------------------------
def test_differing_keys_flatten_nested_tables_and_count_a_missing_key() -> None:
    a = flatten(
        {
            "run": {"epochs": 3, "seed": 0},
            "model": {"hidden": 16, "act": {"kind": "relu", "slope": 0.1}},
            "optimizer": {"lr": 0.01},
        }
    )
    b = flatten(
        {
            "run": {"epochs": 3, "seed": 0},
            "model": {"hidden": 32, "act": {"kind": "relu", "slope": 0.2}},
            "optimizer": {"lr": 0.01},
            "scheduler": {"target": "StepLR"},
        }
    )
    assert a["model.act.kind"] == "relu" and "model.act" not in a
    assert differing_keys([a, b]) == ["model.hidden", "model.act.slope", "scheduler.target"]
    assert differing_keys([{"x": 1, "y": True}, {"x": 1.0, "y": 1}]) == ["y"]  # 1 == 1.0, but true is not 1
    assert differing_keys([a, None, a]) == []  # a run without spec.toml is left out, not "all differ"


def test_short_names_drop_the_stamp_unless_two_runs_share_a_name() -> None:
    assert short_names(["mlp-20260101-120000-ab12", "cnn-20260101-120500-cd34"]) == ["mlp", "cnn"]
    assert short_names(["mlp-20260101-120000-ab12", "mlp-20260102-090000-cd34", "odd"]) == [
        "mlp-ab12",
        "mlp-cd34",
        "odd",
    ]


def test_a_resumed_log_keeps_the_latest_value_of_each_epoch_and_drops_the_abandoned_ones() -> None:
    run = RunHistory(Path("/runs/r-20260101-120000-ab12"))
    # session 1 validated epochs 1-4 and crashed; last.pt held epoch 2, so session 2 trains 3 on again
    run.apply([started(), *validations([0.9, 0.8, 0.7, 0.6]), TrainSteps(5, 33, [0.5], 1, 0.01, 100.0, time=T0)])
    assert run.epochs_done == 4
    run.apply([started(start_epoch=2, resumed=True), *validations([0.75], first_epoch=3, best=0.8)])
    assert run.points("val_loss") == ([1, 2, 3], [0.9, 0.8, 0.75])  # 4 (0.6) belonged to the lost timeline
    assert run.epochs_done == 3 and run.best("val_loss", False) == (3, 0.75)
    run.apply(validations([0.72, 0.74], first_epoch=4, best=0.75))
    assert run.points("val_loss") == ([1, 2, 3, 4, 5], [0.9, 0.8, 0.75, 0.72, 0.74]) and run.epochs_done == 5


def test_best_points_follow_each_runs_mode_and_the_metric_name_otherwise(tmp_path: Path) -> None:
    a, _ = fake_run(tmp_path, "loss", "aaaa", [0.9, 0.5, 0.7])  # monitor val_loss, min
    b, _ = fake_run(tmp_path, "score", "bbbb", [0.9, 0.5, 0.7], monitor="val_acc", mode="max")
    cmp = Comparison([a, b])
    ra, rb = cmp.runs
    assert cmp.best(ra, "val_loss") == (2, 0.5) and cmp.best(rb, "val_loss") == (2, 0.5)
    assert cmp.best(ra, "val_acc") == (2, 0.75)  # not ra's monitor: acc is better higher, by its name
    assert cmp.best(rb, "val_acc") == (2, 0.75)  # rb's monitor, mode max: the check the engine called best
    rb.mode, rb.best_flags = "min", {}  # the run's own mode wins over the name when it monitors the metric
    assert cmp.best(rb, "val_acc") == (1, 0.55)
    assert cmp.metric_names() == ["val_loss", "val_acc", "train_loss"]


def test_the_comparison_lists_states_and_the_differing_spec_values(tmp_path: Path) -> None:
    a, _ = fake_run(tmp_path, "mlp", "aaaa", [0.9, 0.6], {"optimizer": {"lr": 0.01}, "model": {"hidden": 16}})
    b, lock = fake_run(
        tmp_path, "mlp", "bbbb", [0.8], {"optimizer": {"lr": 0.001}, "model": {"hidden": 16, "dropout": 0.1}}, live=True
    )
    try:
        cmp = Comparison([a, b])
        assert cmp.names == ["mlp-aaaa", "mlp-bbbb"]
        assert [r.shown_state for r in cmp.runs] == ["finished", "running"] and cmp.any_live
        assert cmp.differing() == [("model.dropout", ["-", "0.1"]), ("optimizer.lr", ["0.01", "0.001"])]
        text = format_plain(cmp, "val_loss")
        assert "mlp-20260101-120000-aaaa  finished  2/10    0.6000 @2" in text
        assert "mlp-20260101-120000-bbbb  running   1/10    0.8000 @1" in text
        assert "optimizer.lr   0.01      0.001" in text
        # the live run validates again: a poll reads only what it appended
        log = EventLog(b)
        log(validations([0.7], first_epoch=2, best=0.8)[0])
        log.close()
        assert cmp.poll() and cmp.runs[1].points("val_loss") == ([1, 2], [0.8, 0.7])
        assert not cmp.poll()
    finally:
        assert lock is not None
        lock.release()
    assert cmp.poll() and cmp.runs[1].state == "crashed"  # the lock went without a summary


def test_a_keys_numbers_read_alike_whether_toml_holds_an_integer_or_a_float(tmp_path: Path) -> None:
    """lr = 20.0 beside lr = 5 reads 20 beside 5, in the plain table and on the screen; small
    rates read as log lines write them, and floats keep every digit that tells them apart."""
    a, _ = fake_run(
        tmp_path,
        "a",
        "aaaa",
        [0.5],
        {"optimizer": {"lr": 20.0, "weight_decay": 2e-05, "betas": [0.9, 1.0]}, "model": {"dropout": 0.1}},
    )
    b, _ = fake_run(
        tmp_path,
        "b",
        "bbbb",
        [0.5],
        {"optimizer": {"lr": 5, "weight_decay": 0.001, "betas": [0.9, 2]}, "model": {"dropout": 0.10000000000000002}},
    )
    assert "lr = 20.0" in (a / SPEC).read_text() and "lr = 5\n" in (b / SPEC).read_text()  # as TOML holds them
    cmp = Comparison([a, b])
    assert cmp.differing() == [
        ("model.dropout", ["0.1", "0.10000000000000002"]),
        ("optimizer.lr", ["20", "5"]),
        ("optimizer.weight_decay", ["2e-05", "0.001"]),
        ("optimizer.betas", ["[0.9, 1]", "[0.9, 2]"]),
    ]
    plain = format_plain(cmp, "val_loss").splitlines()
    assert "optimizer.lr            20        5" in plain
    assert "optimizer.weight_decay  2e-05     0.001" in plain
    screen = table_text(cmp, "val_loss", 120, 20).plain.splitlines()
    lr_line = next(line for line in screen if line.startswith("optimizer.lr"))
    assert lr_line.split() == ["optimizer.lr", "20", "5"], screen
    assert next(line for line in screen if line.startswith("optimizer.weight_decay")).split()[1:] == ["2e-05", "0.001"]
    assert "20.0" not in "\n".join(plain + screen)


def test_the_table_fits_narrow_terminals_by_dropping_runs_not_digits(tmp_path: Path) -> None:
    long_target = {"model": {"target": "a_rather_long_module_name.py:SomeVeryLongModelFactoryName"}}
    runs = [
        fake_run(
            tmp_path,
            f"experiment-{i}",
            f"{i:04x}",
            [0.123456 + i],
            long_target if i == 0 else {"optimizer": {"lr": 10.0**-i}},
        )[0]
        for i in range(6)
    ]
    cmp = Comparison(runs)
    wide = table_text(cmp, "val_loss", 200, 30).plain
    assert "1.1235 @1" in wide and "5.1235 @1" in wide and "optimizer.lr" in wide and "model.target" in wide
    for width, height in ((80, 10), (60, 6), (40, 5)):
        text = table_text(cmp, "val_loss", width, height).plain
        lines = text.splitlines()
        assert len(lines) <= height and all(len(ln) <= width for ln in lines), text
        shown = [f"{i}.1235 @1" for i in range(6) if f"{i}.1235 @1" in text]
        assert shown == [f"{i}.1235 @1" for i in range(len(shown))] and shown, text  # the first runs whole
        left_out = [] if len(shown) == 6 else [str(6 - len(shown))]
        assert re.findall(r"\+(\d+) more runs? not shown", text) == left_out, text  # counted, when there are any
    assert "… 2 more differing keys" in table_text(cmp, "val_loss", 200, 5).plain


def test_the_figure_has_a_line_and_a_best_marker_per_run_in_its_colour(tmp_path: Path) -> None:
    a, _ = fake_run(tmp_path, "a", "aaaa", [0.9, 0.5, 0.7])
    b, _ = fake_run(tmp_path, "b", "bbbb", [0.8, 0.6, 0.4])
    fig = metric_figure(Comparison([a, b]), "val_loss", 100)
    assert [p[0] for p in fig.legend] == ["━ a", "━ b", "◆ best"]
    marks = [(ln.xs, ln.ys, ln.color) for ln in fig.lines if ln.marker == "◆"]
    assert marks == [([2.0], [0.5], fig.legend[0][1]), ([3.0], [0.4], fig.legend[1][1])]


# ---- the screen -----------------------------------------------------------------------------------
def screen_text(app: CompareApp) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def wait_for(pilot, predicate: Callable[[], object], what: str, timeout: float = 10.0) -> str:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; screen:\n{screen_text(pilot.app)}")
        await pilot.pause(0.05)
    return screen_text(pilot.app)


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
@run_async
async def test_the_screen_shows_every_run_the_differing_keys_and_follows_a_live_run(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    a, _ = fake_run(tmp_path, "baseline", "aaaa", [0.9, 0.6, 0.5, 0.55], {"optimizer": {"lr": 0.01}})
    b, _ = fake_run(tmp_path, "wider", "bbbb", [0.8, 0.5, 0.45], {"optimizer": {"lr": 0.01}, "model": {"hidden": 64}})
    c, lock = fake_run(tmp_path, "faster", "cccc", [0.7], {"optimizer": {"lr": 0.03}}, live=True)
    assert lock is not None
    try:
        app = CompareApp(Comparison([a, b, c]), poll_s=0.1)
        async with app.run_test(size=size) as pilot:
            needles = (
                "━ baseline",
                "━ wider",
                "━ faster",
                "◆",
                "val_loss by epoch",
                "model.hidden",
                "optimizer.lr",
                "0.03",
                "0.5000 @3",
                "0.4500 @3",
                "0.7000 @1",
                "running",
                "finished",
                "1 live",
                "Next metric",
                "Leave",
            )
            screen = await wait_for(
                pilot,
                lambda: (
                    all(needle in screen_text(app) for needle in needles)
                    and len(screen_text(app).splitlines()) == size[1]
                ),
                "the plot, the table and the footer",
            )
            lines = screen.splitlines()
            assert len(lines) == size[1] and all(len(ln) <= size[0] for ln in lines)
            for needle in needles:
                assert needle in screen, f"{needle!r} not on the {size} screen:\n{screen}"
            plot = app.query_one("#plot")
            await pilot.press("m")
            screen = await wait_for(pilot, lambda: "val_acc by epoch" in screen_text(app), "val_acc after m")
            assert "best val_acc" in screen and "0.7750 @3" in screen  # wider's best accuracy: higher is better
            await pilot.press("m", "m")
            await wait_for(pilot, lambda: "val_loss by epoch" in screen_text(app), "back to val_loss")
            # the live run validates epoch 2: the plot and the table follow within a poll
            log = EventLog(c)
            log(validations([0.3], first_epoch=2, best=0.7)[0])
            log.close()
            await wait_for(pilot, lambda: "0.3000 @2" in screen_text(app), "the live run's new best")
            faster = [ln for ln in plot.figure.lines if ln.color == plot.figure.legend[2][1] and ln.marker == "braille"]
            assert faster and faster[0].xs == [1.0, 2.0]
            await pilot.press("q")
        assert app.return_code in (0, None)
    finally:
        lock.release()


def user_metric_run(out: Path, name: str, tag: str, rows: list[dict[str, float]]) -> Path:
    """A finished run whose [metrics] are the user's own: val_f1 and val_auroc (higher is better, as
    their metric objects said at the start), val_brier (lower is better, by the name rule)."""
    run_dir = out / f"{name}-20260101-120000-{tag}"
    run_dir.mkdir(parents=True)
    data = spec_data(metrics={"f1": "m.py:f1", "auroc": "m.py:auroc", "brier": "m.py:brier"})
    data["run"]["name"] = name
    (run_dir / SPEC).write_text(dump_toml(data), encoding="utf-8")
    update_info(run_dir, name=name, started=T0, **who())
    log = EventLog(run_dir)
    begin = started()
    log(
        RunStarted(
            **{
                **{f.name: getattr(begin, f.name) for f in dataclasses.fields(begin)},
                "metrics": ["train_loss", "val_loss", "val_f1", "val_auroc", "val_brier"],
                "modes": {"val_f1": "max", "val_auroc": "max"},
            }
        )
    )
    for epoch, metrics in enumerate(rows, 1):
        log(Validated(epoch, epoch * 8, metrics, True, 0.1, time=T0 + epoch))  # val_loss falls every epoch
    log(Finished("completed", "all epochs done", len(rows), len(rows) * 8, None, None, "val_loss", 1.0, time=T0 + 99))
    write_summary(run_dir, {"status": "completed", "epochs": EPOCHS, "epochs_done": len(rows)})
    log.close()
    return run_dir


@run_async
async def test_m_cycles_through_the_users_own_metrics_each_best_its_own_way(tmp_path: Path) -> None:
    def rows(f1: list[float], auroc: list[float], brier: list[float]) -> list[dict[str, float]]:
        return [
            {"train_loss": 0.6 - i / 10, "val_loss": 0.5 - i / 20, "val_f1": f, "val_auroc": a, "val_brier": b}
            for i, (f, a, b) in enumerate(zip(f1, auroc, brier, strict=True))
        ]

    a = user_metric_run(tmp_path, "rare", "aaaa", rows([0.2, 0.5, 0.6], [0.7, 0.9, 0.85], [0.3, 0.2, 0.25]))
    b = user_metric_run(tmp_path, "weighted", "bbbb", rows([0.3, 0.1], [0.6, 0.65], [0.4, 0.35]))
    app = CompareApp(Comparison([a, b]), poll_s=0.1)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: "val_loss by epoch" in screen_text(app), "the first metric")
        # val_loss, then the other validation metrics by name, then train_loss, and round again
        for metric, best_a, best_b in [
            ("val_auroc", "0.9000 @2", "0.6500 @2"),  # higher is better, as the metric said
            ("val_brier", "0.2000 @2", "0.3500 @2"),  # lower is better
            ("val_f1", "0.6000 @3", "0.3000 @1"),
            ("train_loss", "0.4000 @3", "0.5000 @2"),
            ("val_loss", "0.4000 @3", "0.4500 @2"),
        ]:
            await pilot.press("m")
            screen = await wait_for(pilot, lambda m=metric: f"{m} by epoch" in screen_text(app), f"{metric} after m")
            assert app.metric == metric and f"best {metric}" in screen, screen
            assert best_a in screen and best_b in screen, f"{metric}: {screen}"
        await pilot.press("q")


# ---- the command ----------------------------------------------------------------------------------
def test_piped_compare_prints_the_table_and_errors_say_what_to_do(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    fake_run(out, "mlp", "aaaa", [0.9, 0.6], {"model": {"hidden": 16}})
    fake_run(out, "mlp", "bbbb", [0.8, 0.7, 0.65], {"model": {"hidden": 32}})
    done = run_cli("compare", "aaaa", "bbbb", "--out-dir", out, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "RUN                       STATE     EPOCHS  BEST val_loss",
        "mlp-20260101-120000-aaaa  finished  2/10    0.6000 @2",
        "mlp-20260101-120000-bbbb  finished  3/10    0.6500 @3",
        "",
        "SPEC          mlp-aaaa  mlp-bbbb",
        "model.hidden  16        32",
    ]
    acc = run_cli("compare", "aaaa", "bbbb", "--out-dir", out, "--metric", "val_acc", cwd=tmp_path, timeout=60)
    assert "BEST val_acc" in acc.stdout and "0.7000 @2" in acc.stdout
    for args, needles in (
        (["aaaa"], ["two or more runs", "tuiloop show aaaa"]),
        (["aaaa", "zzzz"], ["no run directory 'zzzz'", "tuiloop ls"]),
        (["aaaa", "mlp"], ["'mlp' matches 2 runs", "give more of the name"]),
        (["aaaa", str(out / "mlp-20260101-120000-aaaa")], ["the same run"]),
        (["aaaa", "bbbb", "--metric", "val_f1"], ["--metric val_f1", "val_loss, val_acc, train_loss"]),
    ):
        bad = run_cli("compare", *args, "--out-dir", out, cwd=tmp_path, timeout=60)
        assert bad.returncode == 2 and not bad.stdout, (args, bad.stdout, bad.stderr)
        assert bad.stderr.startswith("tuiloop: error: ") and all(n in bad.stderr for n in needles), (args, bad.stderr)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_compare_in_a_real_terminal_shows_both_runs_switches_metric_and_quits(tmp_path: Path, tmux: Tmux) -> None:
    out = tmp_path / "runs"
    fake_run(out, "baseline", "aaaa", [0.9, 0.6, 0.5], {"optimizer": {"lr": 0.01}})
    fake_run(out, "tuned", "bbbb", [0.8, 0.45, 0.5], {"optimizer": {"lr": 0.003}})
    term = tmux.new("compare", f"{TUILOOP} compare baseline tuned --out-dir {out}", width=120, height=40)
    screen = tmux.wait_for(term, r"(?s)━ baseline.*━ tuned.*optimizer\.lr\s+0\.01\s+0\.003.*Next metric", 30)
    assert "val_loss by epoch" in screen and "0.4500 @2" in screen and "Traceback" not in screen
    tmux.send(term, "m")
    tmux.wait_for(term, r"val_acc by epoch", 10)
    tmux.send(term, "q")
    tmux.wait_for(term, r"\[exit 0\]", 10)
    wait_until(lambda: "[exit 0]" in tmux.screen(term), 5, "the prompt")
