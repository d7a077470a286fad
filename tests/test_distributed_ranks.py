"""Distributed runs as a user meets them, beyond tests/test_distributed.py: tuiloop joining a
launcher of the user's own (torchrun, srun), the process count from the spec, each rank's shard
of every epoch, validation of a split that does not divide evenly, early stopping, the NaN stop
and force agreed by both ranks, and each rank's own log.

Real processes, gloo on the CPU, two ranks. A launch costs several seconds on a small machine,
so the tests that look at the same run share its launch (module fixtures). The ranks run with a
short process-group timeout: a rank left waiting in a collective fails the run in seconds
instead of hanging the suite.
"""

from __future__ import annotations

import itertools
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import tiny
import torch
from conftest import FIXTURES, cli_env, load_ckpt, only_run, run_cli, write_spec
from runs_support import events, run_processes, start_detached, summary, wait_until

from tuiloop.rundir.control import send_command
from tuiloop.rundir.state import run_state

TWO = ("--nproc-per-node", "2")
DIST_TIMEOUT = "20"  # seconds a collective may wait for the other rank before the run fails


def env(**extra: str) -> dict[str, str]:
    return {**cli_env(), "TUILOOP_DIST_TIMEOUT": DIST_TIMEOUT, **extra}


def tuiloop(*args: str | Path, cwd: Path, timeout: float = 120, **extra_env: str) -> subprocess.CompletedProcess:
    """``python -m tuiloop ARGS`` in the foreground, output piped (headless)."""
    return subprocess.run(
        [sys.executable, "-m", "tuiloop", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(**extra_env),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_running(spec: Path) -> list[psutil.Process]:
    """Processes whose command line names ``spec`` (the ranks a launcher of the user's own started)."""
    return [p for p in psutil.process_iter(["cmdline"]) if str(spec) in (p.info["cmdline"] or [])]


def one_process_eval(ckpt: Path, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """val_loss and val_acc of a checkpoint's weights on (x, y), in this one process, in one batch."""
    model = tiny.MLP(4, 3, 16)
    model.load_state_dict(load_ckpt(ckpt)["model_state_dict"])
    with torch.no_grad():
        out = model(x)
    return torch.nn.functional.cross_entropy(out, y).item(), (out.argmax(1) == y).sum().item() / len(
        y
    )  # the count over the size, exactly


def assert_metrics_of_one_process(run_dir: Path, x: torch.Tensor, y: torch.Tensor) -> None:
    """The last validation's numbers and the best one's are those of one process on the same weights."""
    vals = [e for e in events(run_dir) if e["event"] == "validated"]
    loss, acc = one_process_eval(run_dir / "checkpoints" / "last.pt", x, y)
    assert vals[-1]["metrics"]["val_loss"] == pytest.approx(loss, rel=1e-5)
    assert vals[-1]["metrics"]["val_acc"] == pytest.approx(acc, abs=1e-9)
    best_loss, _ = one_process_eval(run_dir / "checkpoints" / "best.pt", x, y)
    assert summary(run_dir)["best_value"] == pytest.approx(best_loss, rel=1e-5)


@dataclass
class Launch:
    """One finished launch that several tests look at."""

    work: Path
    spec: Path
    done: subprocess.CompletedProcess
    seconds: float

    @property
    def run_dir(self) -> Path:
        return only_run(self.work / "runs")


def workspace(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    work = tmp_path_factory.mktemp(name)
    shutil.copy(FIXTURES / "tiny.py", work / "tiny.py")
    return work


# ---- under torchrun of the user's own: shards, validation, rank logs ---------------------------------
# 121 samples split at random (random_split on the global RNG, as the tutorials do): 80 to train
# (40 per rank, 5 batches of 8), 41 to validate (21 and 20: batches of 8, 8, 5 and 8, 8, 4).
N, N_VAL, EPOCHS = 121, 41, 3


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> Launch:
    """``torchrun --standalone --nproc-per-node 2 -m tuiloop run SPEC --headless``: tuiloop joins."""
    work = workspace(tmp_path_factory, "joined")
    (work / "reads").mkdir()
    spec = write_spec(
        work,
        run={"epochs": EPOCHS},
        data={
            "target": "tiny.py:recorded_classes",
            "folder": str(work / "reads"),
            "n": N,
            "n_val": N_VAL,
            "batch_size": 8,
            "val_batch_size": 8,
        },
    )
    t0 = time.monotonic()
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "tuiloop",
        "run",
        str(spec),
        "--headless",
    ]
    done = subprocess.run(torchrun, cwd=work, capture_output=True, text=True, timeout=120, env=env())
    return Launch(work, spec, done, time.monotonic() - t0)


def test_tuiloop_joins_a_torchrun_of_the_users_own(joined: Launch) -> None:
    assert joined.done.returncode == 0, (joined.done.stdout, joined.done.stderr)
    run_dir = joined.run_dir  # one run directory, made by rank 0
    (started,) = [e for e in events(run_dir) if e["event"] == "run_started"]
    assert (started["world_size"], started["backend"]) == (2, "gloo")
    assert summary(run_dir)["status"] == "completed" and summary(run_dir)["epochs_done"] == EPOCHS
    assert joined.done.stdout.count("run tiny started") == 1, joined.done.stdout  # rank 0's lines only
    assert not processes_running(joined.spec)


def _reads(folder: Path, rank: int) -> list[list[tuple[str, int]]]:
    """Rank ``rank``'s reads, one list per phase: training of epoch 1, its validation, training of epoch 2, ..."""
    phases: list[list[tuple[str, int]]] = []
    for line in (folder / f"reads-rank-{rank}.txt").read_text().splitlines():
        split, sample = line.split()
        if not phases or phases[-1][0][0] != split:
            phases.append([])
        phases[-1].append((split, int(sample)))
    return phases


def test_each_epoch_the_ranks_take_disjoint_shards_of_the_training_split_in_a_new_order(joined: Launch) -> None:
    assert joined.done.returncode == 0, joined.done.stderr
    folder = joined.work / "reads"
    # both ranks built the same split, though the data function drew it from the global RNG
    split = (folder / "split-rank-0.txt").read_text()
    assert (folder / "split-rank-1.txt").read_text() == split
    train_ids, val_ids = ({int(i) for i in line.split()[1:]} for line in split.splitlines())
    assert (len(train_ids), len(val_ids)) == (N - N_VAL, N_VAL) and not train_ids & val_ids
    r0, r1 = _reads(folder, 0), _reads(folder, 1)
    assert [p[0][0] for p in r0] == [p[0][0] for p in r1] == ["train", "val"] * EPOCHS
    orders = []
    for epoch in range(EPOCHS):
        a, b = [s for _, s in r0[2 * epoch]], [s for _, s in r1[2 * epoch]]
        assert len(a) == len(b) == len(set(a)) == len(set(b)) == (N - N_VAL) // 2, (
            f"epoch {epoch + 1}: every rank takes its own half once"
        )
        assert not set(a) & set(b) and set(a) | set(b) == train_ids, (
            f"epoch {epoch + 1}: disjoint shards that cover the split"
        )
        orders.append((a, b))
        va, vb = [s for _, s in r0[2 * epoch + 1]], [s for _, s in r1[2 * epoch + 1]]
        assert sorted(va + vb) == sorted(val_ids), f"epoch {epoch + 1}: validation takes each sample exactly once"
    for (a, b), (c, d) in itertools.pairwise(orders):
        assert a != c and b != d, "a new order every epoch"
        assert set(a) != set(c), "a new shard every epoch (the order is drawn for the whole split, then dealt)"


def test_validation_of_a_split_that_does_not_divide_evenly_equals_one_process(joined: Launch) -> None:
    """41 samples, batches of 8 on 2 ranks: no padding duplicate counts, and the sums are all-reduced."""
    assert joined.done.returncode == 0, joined.done.stderr
    val_ids = [int(i) for i in (joined.work / "reads" / "split-rank-0.txt").read_text().splitlines()[1].split()[1:]]
    x, y = tiny.classes(n=N, n_val=0)[0].tensors
    assert_metrics_of_one_process(joined.run_dir, x[val_ids], y[val_ids])


def test_what_each_rank_prints_goes_to_its_own_log(joined: Launch) -> None:
    assert joined.done.returncode == 0, joined.done.stderr
    ranks = joined.run_dir / "ranks"
    assert {p.name for p in ranks.iterdir()} == {"rank-0.log", "rank-1.log"}
    for rank in (0, 1):
        log = (ranks / f"rank-{rank}.log").read_text()
        assert f"recorded_classes built on rank {rank}" in log and f"recorded_classes stderr of rank {rank}" in log, log
        assert f"on rank {1 - rank}" not in log and f"of rank {1 - rank}" not in log
    assert "recorded_classes" not in joined.done.stdout + joined.done.stderr, (
        "the user's output is in the rank logs, not on the screen"
    )


# ---- [run] nproc_per_node in the spec; early stopping agreed ------------------------------------------
@pytest.fixture(scope="module")
def from_spec(tmp_path_factory: pytest.TempPathFactory) -> Launch:
    """``[run] nproc_per_node = 2`` and no flag; early stopping that triggers after epoch 2 (no check
    improves by 100), on an in-memory split of 41 validation samples in batches of 8."""
    work = workspace(tmp_path_factory, "from_spec")
    spec = write_spec(
        work,
        run={"epochs": 50, "nproc_per_node": 2},
        data={"n": 161, "n_val": 41, "val_batch_size": 8},
        early_stopping={"patience": 1, "min_delta": 100},
    )
    t0 = time.monotonic()
    done = tuiloop("run", spec, "--headless", cwd=work)
    return Launch(work, spec, done, time.monotonic() - t0)


def test_nproc_per_node_in_the_spec_launches_that_many_processes(from_spec: Launch) -> None:
    assert from_spec.done.returncode == 0, (from_spec.done.stdout, from_spec.done.stderr)
    assert "distributed: 2 processes (gloo)" in from_spec.done.stdout
    (started,) = [e for e in events(from_spec.run_dir) if e["event"] == "run_started"]
    assert started["world_size"] == 2 and started["steps_per_epoch"] == 4  # 120 samples, 60 per rank, batches of 16
    assert {p.name for p in (from_spec.run_dir / "ranks").iterdir()} == {"rank-0.log", "rank-1.log"}


def test_early_stopping_is_agreed_by_every_rank(from_spec: Launch) -> None:
    """Both ranks stop after the same check: the launcher sees two clean exits, quickly, and nothing is left."""
    assert from_spec.done.returncode == 0, (from_spec.done.stdout, from_spec.done.stderr)
    s = summary(from_spec.run_dir)
    assert (s["status"], s["epochs_done"], s["steps"]) == ("early_stopped", 2, 8)
    updates = [e for e in events(from_spec.run_dir) if e["event"] == "early_stop"]
    assert [u["triggered"] for u in updates] == [False, True]
    assert len([e for e in events(from_spec.run_dir) if e["event"] == "finished"]) == 1
    assert from_spec.seconds < 30, f"{from_spec.seconds:.1f}s"
    assert not run_processes(from_spec.run_dir)


def test_validation_of_an_in_memory_split_that_does_not_divide_evenly_equals_one_process(from_spec: Launch) -> None:
    assert from_spec.done.returncode == 0, from_spec.done.stderr
    x, y = tiny.classes(n=161, n_val=41)[1].tensors
    assert_metrics_of_one_process(from_spec.run_dir, x, y)


def test_nproc_per_node_auto_without_a_gpu_is_one_process(workdir: Path) -> None:
    """ "auto" is one process per visible GPU; with none visible (a CPU machine, or
    CUDA_VISIBLE_DEVICES="") it is one process: the plain run, no torchrun, no rank logs."""
    spec = write_spec(workdir, run={"epochs": 1, "nproc_per_node": "auto"})
    done = tuiloop("run", spec, "--headless", cwd=workdir, CUDA_VISIBLE_DEVICES="")
    assert done.returncode == 0, done.stderr
    assert "distributed:" not in done.stdout
    run_dir = only_run(workdir / "runs")
    (started,) = [e for e in events(run_dir) if e["event"] == "run_started"]
    assert started["world_size"] == 1 and not (run_dir / "ranks").exists()


# ---- under srun ----------------------------------------------------------------------------------------
def test_tuiloop_joins_an_srun_launch(workdir: Path) -> None:
    """What ``srun python -m tuiloop run SPEC --headless`` starts: one task per rank, told its
    place by SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, meeting at MASTER_ADDR:MASTER_PORT."""
    spec = write_spec(workdir, run={"epochs": 1})
    base = {k: v for k, v in env().items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), SLURM_NTASKS="2")
    tasks = [
        subprocess.Popen(
            [sys.executable, "-m", "tuiloop", "run", str(spec), "--headless"],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**base, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
        )  # fmt: skip
        for rank in (0, 1)
    ]
    try:
        outs = [t.communicate(timeout=90) for t in tasks]
    finally:
        for t in tasks:
            if t.poll() is None:
                t.kill()
                t.wait()
    assert [t.returncode for t in tasks] == [0, 0], outs
    run_dir = only_run(workdir / "runs")
    (started,) = [e for e in events(run_dir) if e["event"] == "run_started"]
    assert started["world_size"] == 2 and summary(run_dir)["status"] == "completed"
    assert "run tiny started" in outs[0][0] and "run tiny started" not in outs[1][0]
    assert {p.name for p in (run_dir / "ranks").iterdir()} == {"rank-0.log", "rank-1.log"}


# ---- the NaN stop and force on two ranks ------------------------------------------------------------------
def test_a_nan_loss_stops_every_rank(workdir: Path) -> None:
    """Sample 40 has a NaN feature: the mean loss of both ranks goes NaN at the same flush, on both."""
    spec = write_spec(
        workdir,
        run={"epochs": 20},
        data={"target": "tiny.py:with_nan"},
        model={"out_features": 1},
        loss={"target": "MSELoss"},
    )
    t0 = time.monotonic()
    done = tuiloop("run", spec, "--headless", *TWO, cwd=workdir, timeout=60)
    assert time.monotonic() - t0 < 30
    assert done.returncode == 1, (done.stdout, done.stderr)
    run_dir = only_run(workdir / "runs")
    s = summary(run_dir)
    assert s["status"] == "failed" and s["reason"].startswith("the training loss became nan at step"), s
    assert len([e for e in events(run_dir) if e["event"] == "finished"]) == 1
    assert not run_processes(run_dir)


def test_a_rank_stuck_in_a_data_read_is_named_with_its_line_and_force_ends_the_run_within_2s(
    workdir: Path, cleanup: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 1 hangs in its 41st read (the third batch of 16), rank 0 waits for it in a collective:
    the log says rank 1 stalled and where; no step boundary comes, force does not wait for one."""
    marker = workdir / "stuck"
    monkeypatch.setenv("TUILOOP_DIST_TIMEOUT", DIST_TIMEOUT)
    data = {"target": "tiny.py:stalling_classes", "marker": str(marker), "after": 40, "rank": 1}
    run_dir = start_detached(
        write_spec(workdir, run={"epochs": 5, "stall_after": 1.0}, data=data), cwd=workdir, extra=TWO
    )
    cleanup.append(run_dir)
    wait_until(lambda: marker.exists() and marker.read_text().split() == ["1"], 60, "rank 1 to block in a data read")
    stalls = lambda: {e["rank"]: e for e in events(run_dir) if e["event"] == "stalled"}  # noqa: E731
    wait_until(lambda: set(stalls()) == {0, 1}, 30, "rank 0's stall and rank 1's report in the log")
    assert re.fullmatch(r"tiny\.py:\d+ in __getitem__", stalls()[1]["where"]), stalls()[1]
    assert "__getitem__" not in stalls()[0]["where"], "rank 0 waits for rank 1, not in a read"
    assert "rank 1: no step for" in run_cli("show", run_dir, cwd=workdir).stdout
    assert len([p for p in run_processes(run_dir) if "_rank" in p.cmdline()]) == 2
    t0 = time.monotonic()
    assert send_command(run_dir, "force") == {"ok": True}
    wait_until(lambda: run_state(run_dir).state == "forced", 5, "the run's lock free")
    assert time.monotonic() - t0 < 2.0
    assert summary(run_dir)["status"] == "forced"
    wait_until(lambda: not run_processes(run_dir), 5, "no process of the run left")


# ---- the check for leftovers itself ---------------------------------------------------------------------
@pytest.fixture
def zombie_maker(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """A process that looks like tuiloop's launcher of a run in ``tmp_path`` and never waits for the child it started."""
    code = "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', '']); print(p.pid, flush=True); time.sleep(60)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "tuiloop", "_launch", str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        yield proc, int(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_a_zombie_child_of_a_tuiloop_process_counts_as_left_behind(
    zombie_maker: tuple[subprocess.Popen, int], tmp_path: Path
) -> None:
    maker, child = zombie_maker
    wait_until(lambda: psutil.Process(child).status() == psutil.STATUS_ZOMBIE, 10, "the child to end unwaited")
    left = {p.pid for p in run_processes(tmp_path)}
    assert {maker.pid, child} <= left
