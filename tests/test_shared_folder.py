"""A run directory in a folder other users may write to (a group's scratch space): a neighbour
who moves the live run away and puts a link to a folder of theirs in its place gets nothing of
it, every file of a run is owner-only whatever the umask, and a folder that every user may
write to without the sticky bit is refused as a place for runs."""

from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli_env, run_cli, write_spec
from runs_support import ended, events, kill_run, start_detached, summary, wait_until

RUNUSER = shutil.which("runuser")


def _needs_root() -> None:
    if os.geteuid() != 0 or RUNUSER is None or shutil.which("useradd") is None or shutil.which("groupadd") is None:
        pytest.skip("needs root (useradd, groupadd, runuser) to act as a second user")


@pytest.fixture
def neighbour() -> Iterator[tuple[str, str]]:
    """A throwaway user and a group it shares with us: (user, group)."""
    _needs_root()
    name, group = f"tlnb{os.getpid() % 100000}", f"tlsh{os.getpid() % 100000}"
    subprocess.run(["groupadd", group], check=True)
    try:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", "-N", "-g", group, name], check=True)
        try:
            yield name, group
        finally:
            subprocess.run(["userdel", name], check=False)
    finally:
        subprocess.run(["groupdel", group], check=False)


def as_user(user: str, script: str) -> subprocess.CompletedProcess:
    assert RUNUSER is not None
    return subprocess.run(
        [RUNUSER, "-u", user, "--", "/bin/sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )


def modes(run_dir: Path) -> dict[str, int]:
    """The permission bits of everything in a run directory, by relative path."""
    out = {".": stat.S_IMODE(run_dir.lstat().st_mode)}
    for path in run_dir.rglob("*"):
        out[str(path.relative_to(run_dir))] = stat.S_IMODE(path.lstat().st_mode)
    return out


def assert_owner_only(run_dir: Path) -> None:
    bad = {
        name: oct(mode)
        for name, mode in modes(run_dir).items()
        if mode != (0o700 if (run_dir / name).is_dir() else 0o600) and not name.endswith("control.sock")
    }
    assert not bad, f"not owner-only: {bad}"


def test_a_neighbour_who_swaps_the_live_run_for_a_link_gets_nothing(neighbour: tuple[str, str]) -> None:
    user, group = neighbour
    top = Path(tempfile.mkdtemp(prefix="tuiloop-shared-"))
    run_dir = None
    try:
        os.chmod(top, 0o755)
        shutil.copy(Path(__file__).parent / "fixtures" / "tiny.py", top / "tiny.py")
        shared = top / "scratch"  # the group's scratch folder: both of us may write to it
        shared.mkdir()
        os.chown(shared, 0, grp.getgrnam(group).gr_gid)
        os.chmod(shared, 0o2770)
        spec = write_spec(
            top,
            run={"epochs": 6, "out_dir": str(shared)},
            model={"delay": 0.05},
            checkpoint={"best": True, "last": True, "every_n_epochs": 1},
        )
        run_dir = start_detached(spec, cwd=top)
        wait_until(lambda: any(e["event"] == "checkpoint" for e in events(run_dir)), 60, "the first checkpoint")

        # The neighbour moves the live run away and links its name to a folder of theirs.
        evil, moved = shared / "evil", shared / f"{run_dir.name}.moved"
        swap = as_user(
            user,
            f"umask 000 && mkdir -p {evil}/checkpoints && mv {run_dir} {moved} && ln -s {evil} {run_dir}",
        )
        assert swap.returncode == 0, swap.stderr
        assert run_dir.is_symlink()

        wait_until(lambda: ended(moved), 90, "the moved run to finish and close")
        # Everything the run wrote after the swap went into its own (moved) directory...
        assert summary(moved)["status"] == "completed"
        assert [e["epoch"] for e in events(moved) if e["event"] == "validated"] == [1, 2, 3, 4, 5, 6]
        assert (moved / "checkpoints" / "epoch-0006.pt").is_file() and not (moved / "control.sock").exists()
        # ...and nothing into the neighbour's folder: no run.json, summary, socket or checkpoint.
        assert sorted(str(p.relative_to(evil)) for p in evil.rglob("*")) == ["checkpoints"]
        # The neighbour cannot read the checkpoints where they are.
        peek = as_user(user, f"cat {moved}/checkpoints/last.pt > /dev/null")
        assert peek.returncode != 0 and "Permission denied" in peek.stderr, peek
        assert_owner_only(moved)
        # The run said that its folder lets the group rename it.
        warnings = [e["text"] for e in events(moved) if e["event"] == "message" and e["level"] == "warning"]
        assert any("writable by its group" in w and str(shared) in w for w in warnings), warnings
    finally:
        if run_dir is not None:
            kill_run(run_dir if run_dir.is_dir() and not run_dir.is_symlink() else shared / f"{run_dir.name}.moved")
        shutil.rmtree(top, ignore_errors=True)


def test_every_file_of_a_run_is_owner_only_whatever_the_umask(workdir: Path) -> None:
    """A umask of 000 would make every file world-writable; the run's files stay 0600, its folders 0700."""
    out_dir = workdir / "made-by-the-run"
    spec = write_spec(workdir, run={"epochs": 2, "out_dir": str(out_dir)}, checkpoint={"every_n_epochs": 1})
    done = subprocess.run(
        [sys.executable, "-m", "tuiloop", "run", str(spec), "--headless"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(),
        preexec_fn=lambda: os.umask(0),
    )
    assert done.returncode == 0, done.stderr
    (run_dir,) = out_dir.iterdir()
    names = set(modes(run_dir))
    assert {"run.json", "spec.toml", "events.jsonl", "digest.json", "summary.json", "run.lock"} <= names
    assert {"checkpoints/best.pt", "checkpoints/last.pt", "checkpoints/epoch-0002.pt"} <= names
    assert_owner_only(run_dir)
    assert stat.S_IMODE(out_dir.stat().st_mode) & 0o022 == 0, "the folder the run made is writable by others"


def test_a_folder_every_user_may_write_to_is_refused_unless_sticky(workdir: Path) -> None:
    open_to_all = workdir / "open"
    open_to_all.mkdir()
    os.chmod(open_to_all, 0o777)
    spec = write_spec(workdir, run={"epochs": 1, "out_dir": str(open_to_all)})
    done = run_cli("run", spec, "--headless", cwd=workdir)
    assert done.returncode == 2, done.stdout + done.stderr
    err = done.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err  # one paragraph
    assert f"[run] out_dir = {open_to_all}" in err and "every user may write to this folder" in err
    assert f"chmod o-w {open_to_all}" in err and "sticky" in err
    assert list(open_to_all.iterdir()) == [], "a refused run leaves nothing behind"

    os.chmod(open_to_all, 0o1777)  # as /tmp: others may not rename what is not theirs
    done = run_cli("run", spec, "--headless", cwd=workdir)
    assert done.returncode == 0, done.stderr
    (run_dir,) = open_to_all.iterdir()
    assert summary(run_dir)["status"] == "completed"
