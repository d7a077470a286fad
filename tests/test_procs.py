"""Telling a live process from a dead one, including the moment a killed process is still dying."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tuiloop.procs import pid_alive

# The main thread ends with pthread_exit while another thread holds the process open: the leader
# shows as a zombie (state Z), which is how a killed multi-threaded run looks while it tears down.
LEADER_GONE = """
import ctypes, sys, threading, time
t = threading.Thread(target=time.sleep, args=(30,), daemon=True)
t.start()
print("ready", flush=True)
ctypes.CDLL(None).pthread_exit(None)
"""


def _leader_state(pid: int) -> bytes:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_process_whose_leader_is_a_zombie_but_threads_run_is_alive() -> None:
    p = subprocess.Popen([sys.executable, "-c", LEADER_GONE], stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 10
        while _leader_state(p.pid) != b"Z":
            assert time.monotonic() < deadline, "the leader thread did not exit"
            time.sleep(0.01)
        assert pid_alive(p.pid)
    finally:
        p.kill()
        p.wait()
    assert not pid_alive(p.pid)


def test_an_exited_unreaped_child_is_dead() -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while pid_alive(p.pid):  # a zombie until we wait() for it
        assert time.monotonic() < deadline, "the exited child still looks alive"
        time.sleep(0.01)
    p.wait()
    assert not pid_alive(p.pid)
