"""The machine's load: the sampler's thread (CPU part on this machine, NVML faked or failing),
the SystemSample event, the monitor's system pane and ``show``'s summary, and a real run's log."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pynvml
import pytest
from conftest import only_run, run_cli, write_spec
from runs_support import wait_until

from tuiloop.cli.views import system_summary
from tuiloop.engine.events import Event, Finished, Message, SystemSample, event_from_dict
from tuiloop.rundir.eventlog import decode, encode, line_prefix, read_events
from tuiloop.runner import system
from tuiloop.runner.spec_run import run_spec
from tuiloop.runner.system import SystemSampler, short_name, visible_indices
from tuiloop.tui.model import MonitorModel
from tuiloop.tui.panels.machine import system_text

GiB = 2**30
FAST = 0.02  # seconds between samples in these tests (2 s in a run)


def collect(
    sampler_kwargs: dict[str, Any], samples: int = 3, timeout: float = 10.0
) -> tuple[list[Event], SystemSampler]:
    """Run a sampler until it emitted ``samples`` samples (the test fails if it does not), then stop it."""
    events: list[Event] = []
    sampler = SystemSampler(events.append, FAST, **sampler_kwargs).start()
    try:
        wait_until(lambda: len(of(events, SystemSample)) >= samples, timeout, f"{samples} samples", every=0.01)
    finally:
        sampler.stop()
    return events, sampler


def of(events: list[Event], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


# ---- the sampler --------------------------------------------------------------------------------------
def test_the_sampler_samples_cpu_and_memory_and_stops_cleanly() -> None:
    events, sampler = collect({"gpus": False})
    samples = of(events, SystemSample)
    assert len(samples) >= 3 and sampler.samples == len(samples)
    assert not sampler._thread.is_alive()  # type: ignore[union-attr]
    time.sleep(5 * FAST)  # five intervals in which nothing may come: the absence is what is checked
    assert len(events) == len(samples), "nothing is emitted after stop()"
    vm = psutil.virtual_memory()
    rss = psutil.Process().memory_info().rss
    for s in samples:
        assert 0.0 <= s.cpu_percent <= 100.0 and s.proc_cpu is not None and s.proc_cpu >= 0.0
        assert s.ram_total == vm.total and 0 < s.ram_used <= s.ram_total
        assert rss / 2 < s.rss < rss * 2  # this process's resident memory
        assert s.gpus == [] and s.torch_peak_bytes is None  # no GPU asked for; torch's CUDA not initialised
    assert samples[1].time - samples[0].time >= FAST * 0.9


def test_the_first_sample_waits_one_interval_and_a_zero_interval_turns_sampling_off() -> None:
    events: list[Event] = []
    sampler = SystemSampler(events.append, 0.5, gpus=False).start()
    time.sleep(0.1)  # a fifth of the interval, in which no sample may come: the absence is what is checked
    sampler.stop()
    assert events == [] and not sampler._thread.is_alive()  # type: ignore[union-attr]
    off = SystemSampler(events.append, 0.0).start()
    assert off._thread is None
    off.stop()


def test_a_failing_log_or_sample_never_raises_into_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    raised: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", raised.append)

    def broken_log(event: Event) -> None:
        raise OSError("disk full")

    sampler = SystemSampler(broken_log, FAST, gpus=False).start()
    sampler._thread.join(5)  # type: ignore[union-attr]
    assert not sampler._thread.is_alive() and raised == [] and sampler.samples == 0  # type: ignore[union-attr]
    sampler.stop()

    def no_memory() -> None:
        raise RuntimeError("psutil broke")

    monkeypatch.setattr(psutil, "virtual_memory", no_memory)
    events, _ = collect({"gpus": False}, samples=3)
    warnings = of(events, Message)
    assert (
        len(warnings) == 1 and "CPU and memory are no longer sampled (RuntimeError: psutil broke)" in warnings[0].text
    )
    assert all(s.ram_total == 0 and s.rss == 0 for s in of(events, SystemSample)) and raised == []


def test_out_of_file_descriptors_for_a_moment_skips_samples_and_sampling_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flood of clients once took every descriptor: /proc/stat could not be opened, and CPU
    sampling stopped for good. An OSError skips that sample; the next ones come as before."""
    real = psutil.virtual_memory
    failures = [OSError(24, "Too many open files")] * 3

    def flaky() -> Any:
        if failures:
            raise failures.pop()
        return real()

    monkeypatch.setattr(psutil, "virtual_memory", flaky)
    events, sampler = collect({"gpus": False}, samples=3)
    assert failures == [] and sampler._cpu_on
    assert [w.text for w in of(events, Message)] == [
        "CPU and memory could not be sampled ([Errno 24] Too many open files); trying again"
    ]
    assert all(s.ram_total > 0 for s in of(events, SystemSample)), "no sample of zeros for the skipped ones"

    monkeypatch.setattr(system, "CPU_GIVE_UP_S", 0.0)  # a minute of errors in a row: off, and said
    failures[:] = [OSError(24, "Too many open files")] * 1000
    events, sampler = collect({"gpus": False}, samples=2)
    assert not sampler._cpu_on
    assert "CPU and memory are no longer sampled (OSError: [Errno 24] Too many open files, for a minute)" in [
        w.text for w in of(events, Message)
    ]


def test_without_nvml_the_sampler_tries_once_silently_and_samples_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def no_library() -> None:
        calls.append(1)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_library)
    events, _ = collect({}, samples=4)
    assert calls == [1], "NVML's start is tried once, not every sample"
    assert of(events, Message) == [], "a machine without NVIDIA GPUs says nothing about it"
    samples = of(events, SystemSample)
    assert len(samples) >= 4 and all(s.gpus == [] and s.ram_total > 0 for s in samples)


class FakeNVML:
    """Three GPUs as NVML reports them; GPU 2 does not report its power."""

    uuids = ["GPU-aaaa-0000", "GPU-bbbb-1111", "GPU-cccc-2222"]

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inits = self.shutdowns = 0
        self.util = [97, 40, 3]
        fake = {
            "nvmlInit": self.init,
            "nvmlShutdown": self.shutdown,
            "nvmlDeviceGetCount": lambda: 3,
            "nvmlDeviceGetHandleByIndex": lambda i: ("handle", i),
            "nvmlDeviceGetUUID": lambda h: self.uuids[h[1]],
            "nvmlDeviceGetName": lambda h: b"NVIDIA H100 80GB HBM3" if h[1] == 0 else "NVIDIA A100-SXM4-40GB",
            "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=self.util[h[1]], memory=0),
            "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(used=(h[1] + 1) * 10 * GiB, total=80 * GiB, free=0),
            "nvmlDeviceGetTemperature": lambda h, sensor: 60 + h[1] if sensor == pynvml.NVML_TEMPERATURE_GPU else -1,
            "nvmlDeviceGetPowerUsage": self.power,
        }
        for name, fn in fake.items():
            monkeypatch.setattr(pynvml, name, fn)

    def init(self) -> None:
        self.inits += 1

    def shutdown(self) -> None:
        self.shutdowns += 1

    def power(self, handle: Any) -> int:
        if handle[1] == 2:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return 312_400 + handle[1]  # milliwatts


def test_a_fake_nvml_gives_one_entry_per_visible_gpu_with_its_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNVML(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")  # cuda:0 is NVML's GPU 2
    events, _ = collect({}, samples=2)
    assert (nvml.inits, nvml.shutdowns) == (1, 1) and of(events, Message) == []
    gpus = of(events, SystemSample)[-1].gpus
    assert gpus == [
        {
            "index": 2,
            "name": "A100-SXM4-40GB",
            "util": 3,
            "mem_used": 30 * GiB,
            "mem_total": 80 * GiB,
            "temp": 62,
            "power_w": None,
        },
        {
            "index": 0,
            "name": "H100 80GB HBM3",
            "util": 97,
            "mem_used": 10 * GiB,
            "mem_total": 80 * GiB,
            "temp": 60,
            "power_w": 312.4,
        },
    ]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    events, _ = collect({}, samples=1)
    assert [g["index"] for g in of(events, SystemSample)[-1].gpus] == [0, 1, 2]


def test_an_nvml_error_while_sampling_turns_the_gpus_off_once_and_the_cpu_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nvml = FakeNVML(monkeypatch)
    calls = []

    def lost(handle: Any) -> Any:
        calls.append(handle)
        if len(calls) > 3:
            raise RuntimeError("GPU fell off the bus")
        return SimpleNamespace(gpu=50, memory=0)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetUtilizationRates", lost)
    events, _ = collect({}, samples=4)
    samples = of(events, SystemSample)
    assert len(samples[0].gpus) == 3 and all(s.gpus == [] for s in samples[1:])
    (warning,) = of(events, Message)
    assert (
        warning.level == "warning" and "GPUs are no longer sampled (RuntimeError: GPU fell off the bus)" in warning.text
    )
    assert len(calls) == 4 and nvml.shutdowns == 1 and all(s.ram_total > 0 for s in samples)


def test_cuda_visible_devices_maps_to_nvml_indices() -> None:
    uuids = FakeNVML.uuids
    assert visible_indices(None, uuids) == [0, 1, 2]
    assert visible_indices("1,0", uuids) == [1, 0]
    assert visible_indices(" 2 , 1 ", uuids) == [2, 1]
    assert visible_indices("0,7,1", uuids) == [0], "the list ends at the first GPU that does not exist, as in CUDA"
    assert visible_indices("", uuids) == [] and visible_indices("-1", uuids) == []
    assert visible_indices("GPU-cccc-2222,GPU-aaaa", uuids) == [2, 0], "a UUID or a unique prefix of one"
    assert visible_indices("bbbb,0", uuids) == [1, 0], "a UUID without GPU-"
    assert visible_indices("GPU-,1", uuids) == [] and visible_indices("MIG-1234", uuids) == []
    assert visible_indices("1,1", uuids) == [1]
    assert (
        short_name("NVIDIA GeForce RTX 4090") == "RTX 4090" and short_name("Tesla V100-SXM2-16GB") == "V100-SXM2-16GB"
    )


# ---- the event, the model, the pane ----------------------------------------------------------------------
def two_gpus(
    t: float, util0: int = 97, used0: float = 61.2, rss: float = 2.1, torch_peak: float | None = 12.3
) -> SystemSample:
    gpu = lambda i, util, used, temp, power: {
        "index": i,
        "name": "H100 80GB HBM3",
        "util": util,
        "mem_used": int(used * GiB),
        "mem_total": int(79.6 * GiB),
        "temp": temp,
        "power_w": power,
    }  # noqa: E731
    return SystemSample(
        cpu_percent=12.0,
        ram_used=int(10.1 * GiB),
        ram_total=24 * GiB,
        rss=int(rss * GiB),
        proc_cpu=180.0,
        torch_peak_bytes=None if torch_peak is None else int(torch_peak * GiB),
        gpus=[gpu(0, util0, used0, 64, 312.4), gpu(1, 3, 1.0, None, None)],
        time=t,
    )


def test_the_event_round_trips_through_json() -> None:
    sample = two_gpus(1000.0)
    line = encode(sample)
    assert line.startswith(b'{"event":"system_sample",') and line.startswith(line_prefix("system_sample"))
    assert event_from_dict(json.loads(line)) == sample == decode(line)
    cpu_only = SystemSample(cpu_percent=1.0, ram_used=1, ram_total=2, rss=3)
    assert (
        event_from_dict(json.loads(encode(cpu_only))) == cpu_only
        and cpu_only.gpus == []
        and cpu_only.torch_peak_bytes is None
    )


def test_the_model_keeps_the_latest_sample_history_and_peaks() -> None:
    m = MonitorModel()
    assert m.system is None and system_summary(m) == []
    m.apply_all(
        [
            two_gpus(1000.0, util0=90, used0=70.0, rss=2.5, torch_peak=12.3),
            two_gpus(1002.0, util0=50, used0=61.2, rss=2.1, torch_peak=None),
        ]
    )
    assert m.system is not None and m.system.time == 1002.0 and m.system_samples == 2
    assert (
        m.gpus[0].mem_peak == int(70.0 * GiB)
        and m.gpus[0].mean_util == 70.0
        and m.gpus[0].util.points() == ([1000.0, 1002.0], [90.0, 50.0])
    )
    assert m.gpus[1].mem_peak == GiB and m.gpus[1].mean_util == 3.0
    assert (
        m.rss_peak == int(2.5 * GiB) and m.torch_peak == int(12.3 * GiB) and m.cpu_history.points()[1] == [12.0, 12.0]
    )
    assert system_summary(m) == [
        "GPU0 H100 80GB HBM3: peak memory 70.0/79.6 GiB, mean util 70%",
        "GPU1 H100 80GB HBM3: peak memory 1.0/79.6 GiB, mean util 3%",
        "peak RSS 2.5 GiB, mean CPU 12%, torch peak 12.3 GiB (2 samples)",
    ]


def two_gpu_lines(width: int) -> tuple[MonitorModel, list[str]]:
    """A model that took six samples of two GPUs, and its system pane at ``width``."""
    m = MonitorModel()
    m.apply_all([two_gpus(1000.0 + 2 * i, util0=97 - 10 * i) for i in range(6)])
    return m, system_text(m, width).plain.splitlines()


@pytest.mark.parametrize("width", [30, 60, 120])
def test_the_system_pane_shows_each_gpu_within_its_width(width: int) -> None:
    assert system_text(MonitorModel(), width).plain == "waiting for the first sample"
    over = MonitorModel()
    over.apply(Finished("completed", "1 epoch done", 1, 8, None, None, None, 1.0))
    assert system_text(over, 60).plain == "no sample: the run ended before the first"
    m, lines = two_gpu_lines(width)
    assert all(len(line) <= width for line in lines), lines
    assert len(lines) == 4 and lines[0].startswith("GPU0 ") and lines[1].startswith("GPU1 ")
    assert (
        "47%" in lines[0] and "3%" in lines[1] and lines[2] == "torch peak 12.3 GiB" and lines[3].startswith("CPU 12%")
    )
    for narrow in range(1, 30):  # never longer than the width, however narrow
        assert all(len(line) <= narrow for line in system_text(m, narrow).plain.splitlines())


@pytest.mark.parametrize("width", [60, 120])
def test_from_60_columns_the_system_pane_adds_memory_temperature_and_power_in_columns(width: int) -> None:
    _, lines = two_gpu_lines(width)
    assert (
        "61.2/79.6 GiB" in lines[0]
        and " 1.0/79.6 GiB" in lines[1]
        and "64°C" in lines[0]
        and "312 W" in lines[0]
        and "- W" in lines[1]
    )
    assert lines[0].index("GiB") == lines[1].index("GiB") and lines[0].index(" W") == lines[1].index(" W")
    assert "RAM 10.1/24.0 GiB" in lines[3] and "RSS 2.1 GiB" in lines[3]


def test_at_120_columns_the_system_pane_adds_the_utilisation_over_time_on_a_fixed_scale() -> None:
    _, lines = two_gpu_lines(120)
    assert "H100" in lines[0] and "peak 61.2" in lines[0]
    assert lines[0].endswith("312 W  █▇▆▆▅▄") and lines[1].endswith("- W  ▁▁▁▁▁▁")


def test_the_pane_drops_pieces_whole_and_a_cpu_only_machine_shows_the_cpu_line() -> None:
    m = MonitorModel()
    m.apply(SystemSample(cpu_percent=7.0, ram_used=3 * GiB, ram_total=16 * GiB, rss=GiB // 2, proc_cpu=99.0))
    assert system_text(m, 80).plain.startswith("CPU 7%  proc 99%  RAM 3.0/16.0 GiB  RSS 0.5 GiB  peak 0.5")
    assert system_text(m, 20).plain == "CPU 7%  RSS 0.5 GiB"  # RAM did not fit: it goes whole, no cut number
    m.apply(two_gpus(1002.0))
    assert system_text(m, 16).plain.splitlines() == ["GPU0  97%  █", "GPU1   3%  ▁", "12.3 GiB", "CPU 12%  ▁▂"]


# ---- a real run --------------------------------------------------------------------------------------------
def test_a_run_logs_system_samples_between_its_start_and_its_end(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(system.INTERVAL_ENV, str(FAST))
    spec = write_spec(workdir, run={"epochs": 10})
    r = run_cli("run", spec, "--headless", cwd=workdir)
    assert r.returncode == 0, r.stderr
    run_dir = only_run(workdir / "runs")
    events, tail = read_events(run_dir)
    assert tail.skipped == 0
    assert events[0].kind == "run_started" and events[-1].kind == "finished", (
        "sampling starts after the start and ends before the end"
    )
    samples = of(events, SystemSample)
    assert samples and all(s.ram_total > 0 and s.rss > 0 for s in samples)
    shown = run_cli("show", run_dir, cwd=workdir)
    assert shown.returncode == 0, shown.stderr
    assert (
        f"system: peak RSS {max(s.rss for s in samples) / GiB:.1f} GiB, mean CPU" in shown.stdout
        and f"({len(samples)} sample" in shown.stdout
    )


def test_a_run_in_this_process_stops_its_sampler(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(system.INTERVAL_ENV, str(FAST))
    seen: list[Event] = []
    # 20 epochs: the sampler thread gets its turns even on a loaded machine (5 left none once, under a parallel run)
    code, run_dir = run_spec(write_spec(workdir, run={"epochs": 20}), sinks=[seen.append])
    assert code == 0
    assert not [t for t in threading.enumerate() if t.name == "tuiloop-system"]
    logged = of(read_events(run_dir)[0], SystemSample)
    assert logged and not of(seen, SystemSample), "samples go to the log, not to the training thread's sinks"


def test_a_tracked_loop_samples_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tuiloop

    monkeypatch.setenv(system.INTERVAL_ENV, str(FAST))
    with tuiloop.track(tmp_path / "mine", epochs=1) as run:
        for step in range(1, 11):
            run.log(step, 1.0 / step)
        # the loop goes on until the sampler's thread logged a sample (however busy the machine)
        wait_until(lambda: of(read_events(tmp_path / "mine")[0], SystemSample), 10, "a system sample in the log")
        run.validated(1, val_loss=0.5)
    events = read_events(tmp_path / "mine")[0]
    assert events[0].kind == "run_started" and events[-1].kind == "finished"
    assert of(events, SystemSample) and not [t for t in threading.enumerate() if t.name == "tuiloop-system"]
