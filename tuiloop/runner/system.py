"""The machine's load while a run trains: CPU, RAM, the process's RSS, and each GPU through NVML.

:class:`SystemSampler` samples from a daemon thread of its own every 2 s and writes one
:class:`~tuiloop.engine.events.SystemSample` to the run's event log, so the live monitor,
``attach`` and ``show`` all read the same history. The training thread never waits for it.

GPU figures come from NVML (the ``nvidia-ml-py`` package, module ``pynvml``; about 0.1 ms a
GPU), never from spawning ``nvidia-smi``. A machine without NVIDIA GPUs or without the driver's
library samples the CPU part only: NVML's start is tried once, silently. An OSError reading the
CPU and memory figures (the process out of file descriptors for a moment, say) skips that sample
and is told once; sampling goes on, and stops only after a minute of such errors in a row. Any
other error in a part of the sampling turns that part off and is told once, as a warning in the
log; sampling never raises into training.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from tuiloop.engine.events import Event, EventReader, Finished, Message, RunStarted, SystemSample, on

INTERVAL_S = 2.0
CPU_GIVE_UP_S = 60.0  # OSErrors in a row for this long turn CPU sampling off
INTERVAL_ENV = "TUILOOP_SYSTEM_INTERVAL"  # seconds between samples; 0 turns sampling off (tests set it short)
_VENDOR = ("NVIDIA ", "GeForce ", "Tesla ", "Quadro ")
Emit = Callable[[Event], None]


def interval_from_env(default: float = INTERVAL_S) -> float:
    """The sampling interval: ``$TUILOOP_SYSTEM_INTERVAL`` if set to a number, else ``default``."""
    try:
        return float(os.environ.get(INTERVAL_ENV, default))
    except ValueError:
        return default


class SystemSampler:
    """Samples the machine every ``interval`` seconds from a daemon thread; each SystemSample goes to ``emit``.

    ``device``: the run's torch device; on CUDA, its peak allocated memory is reported (read
    only once CUDA is initialised: the thread never initialises it). ``gpus``: sample NVML
    (False: the CPU part only). Use :meth:`gate` to tie it to an event log, or
    :meth:`start` / :meth:`stop` directly.
    """

    def __init__(self, emit: Emit, interval: float = INTERVAL_S, device: Any = None, gpus: bool = True) -> None:
        self.emit = emit
        self.interval = interval
        self.device = device
        self.samples = 0  # emitted so far
        self._process = psutil.Process()
        self._cpu_on = True
        self._cpu_failing_since: float | None = None  # the first of the OSErrors in a row, if any
        self._torch_on = True
        self._nvml: Any = None  # the pynvml module once NVML started; None: not (yet) or not available
        self._nvml_tried = not gpus
        self._handles: list[tuple[int, Any, str]] = []  # (NVML index, handle, short name) of each GPU shown
        self._told: set[str] = set()
        self._lock = threading.Lock()  # held while a sample is emitted, so none follows stop()
        self._halted = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- life ------------------------------------------------------------------------------------
    def start(self) -> SystemSampler:
        """Start the thread (once); its first sample comes one interval later. Returns self."""
        if self._thread is None and self.interval > 0 and not self._halted:
            self._prime_cpu()
            self._thread = threading.Thread(target=self._loop, name="tuiloop-system", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """No sample is emitted once this returns; the thread is joined (up to ``timeout``: a daemon
        stuck in a driver call is left behind, silent) and shuts NVML down as it ends."""
        with self._lock:
            self._halted = True
        self._wake.set()
        if self._thread is None:
            self._shutdown_nvml()
        elif self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def gate(self, log: Emit) -> Emit:
        """``log`` as an engine sink that also drives the sampler: sampling starts once RunStarted
        is written and stops before Finished is, so the log starts and ends as before."""
        return _Gate(self, log)

    def _loop(self) -> None:
        try:
            self._start_nvml()
            while not self._wake.wait(self.interval):
                try:
                    sample = self.sample()
                except Exception as e:  # sample() guards each part; this is a last resort
                    self._tell("sampler", f"the machine's load is no longer sampled ({type(e).__name__}: {e})")
                    return
                if sample is None:
                    continue
                with self._lock:
                    if self._halted:
                        return
                    try:
                        self.emit(sample)
                    except Exception:
                        return  # the log itself failed (a full disk?): the run reports that, not us
                    self.samples += 1
        finally:
            self._shutdown_nvml()  # only this thread touches NVML once it runs

    # ---- one sample ----------------------------------------------------------------------------------
    def sample(self) -> SystemSample | None:
        """The machine now (any thread; in the sampler's thread, off the training step); None when
        the CPU figures cannot be read this time (an OSError: try again at the next sample)."""
        cpu, proc_cpu, ram_used, ram_total, rss = 0.0, None, 0, 0, 0
        if self._cpu_on:
            try:
                cpu = psutil.cpu_percent(interval=None)  # since the previous call: never blocks
                vm = psutil.virtual_memory()
                ram_used, ram_total = int(vm.total - vm.available), int(vm.total)
                with self._process.oneshot():
                    rss = int(self._process.memory_info().rss)
                    proc_cpu = float(self._process.cpu_percent(interval=None))
                self._cpu_failing_since = None
            except OSError as e:  # out of file descriptors for a moment (/proc/stat cannot be opened)
                now = time.monotonic()
                self._cpu_failing_since = self._cpu_failing_since or now
                if now - self._cpu_failing_since < CPU_GIVE_UP_S:
                    self._tell("cpu-retry", f"CPU and memory could not be sampled ({e}); trying again")
                    return None
                self._cpu_on = False
                self._tell("cpu", f"CPU and memory are no longer sampled ({type(e).__name__}: {e}, for a minute)")
            except Exception as e:
                self._cpu_on = False
                self._tell("cpu", f"CPU and memory are no longer sampled ({type(e).__name__}: {e})")
        return SystemSample(
            cpu_percent=float(cpu),
            ram_used=ram_used,
            ram_total=ram_total,
            rss=rss,
            proc_cpu=proc_cpu,
            torch_peak_bytes=self._torch_peak(),
            gpus=self._gpus(),
        )

    def _prime_cpu(self) -> None:
        """psutil's CPU figures are measured since the previous call: make the first one count."""
        try:
            psutil.cpu_percent(interval=None)
            self._process.cpu_percent(interval=None)
        except Exception:
            pass  # the first sample finds out and says so

    def _torch_peak(self) -> int | None:
        torch = sys.modules.get("torch")  # a run that never imported torch has no CUDA memory
        if not self._torch_on or torch is None or not torch.cuda.is_initialized():
            return None
        device = self.device
        if device is not None and getattr(device, "type", str(device).split(":")[0]) != "cuda":
            return None
        try:
            return int(torch.cuda.max_memory_allocated(device))
        except Exception as e:
            self._torch_on = False
            self._tell("torch", f"torch's peak GPU memory is no longer sampled ({type(e).__name__}: {e})")
            return None

    # ---- NVML --------------------------------------------------------------------------------------
    def _start_nvml(self) -> None:
        """nvmlInit once, and the handles of the GPUs this process can see; silent when there are none."""
        if self._nvml_tried:
            return
        self._nvml_tried = True
        try:
            import pynvml  # lazy: optional dependency (no NVIDIA library: the CPU part only)

            pynvml.nvmlInit()
        except Exception:
            return  # no NVIDIA driver or GPU here (or no pynvml): the CPU part only
        try:
            count = pynvml.nvmlDeviceGetCount()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            uuids = [_text(pynvml.nvmlDeviceGetUUID(h)) for h in handles]
            self._handles = [
                (i, handles[i], short_name(_text(pynvml.nvmlDeviceGetName(handles[i]))))
                for i in visible_indices(os.environ.get("CUDA_VISIBLE_DEVICES"), uuids)
            ]
        except Exception as e:
            self._tell("gpu", f"GPUs are not sampled: NVML started but could not list them ({type(e).__name__}: {e})")
            _quietly(pynvml.nvmlShutdown)
            return
        self._nvml = pynvml

    def _shutdown_nvml(self) -> None:
        nvml, self._nvml = self._nvml, None
        if nvml is not None:
            _quietly(nvml.nvmlShutdown)

    def _gpus(self) -> list[dict[str, Any]]:
        nvml = self._nvml
        if nvml is None:
            return []
        try:
            return [_gpu(nvml, index, handle, name) for index, handle, name in self._handles]
        except Exception as e:
            self._nvml = None
            self._tell("gpu", f"GPUs are no longer sampled ({type(e).__name__}: {e})")
            _quietly(nvml.nvmlShutdown)
            return []

    def _tell(self, part: str, text: str) -> None:
        """A warning in the run's log, once per part."""
        if part in self._told:
            return
        self._told.add(part)
        with self._lock:
            if self._halted:
                return
            try:
                self.emit(Message("warning", text))
            except Exception:
                pass


def _gpu(nvml: Any, index: int, handle: Any, name: str) -> dict[str, Any]:
    """One GPU's figures; a figure the GPU does not report (an NVMLError) is None."""

    def read(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except nvml.NVMLError:
            return None

    util = read(lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
    mem = read(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    power_mw = read(lambda: nvml.nvmlDeviceGetPowerUsage(handle))
    return {
        "index": index,
        "name": name,
        "util": None if util is None else int(util.gpu),
        "mem_used": None if mem is None else int(mem.used),
        "mem_total": None if mem is None else int(mem.total),
        "temp": read(lambda: int(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))),
        "power_w": None if power_mw is None else round(power_mw / 1000.0, 1),
    }


def visible_indices(cuda_visible: str | None, uuids: list[str]) -> list[int]:
    """The NVML indices of the GPUs ``CUDA_VISIBLE_DEVICES`` lets this process use, in CUDA's order.

    Unset: all of them. Entries are integers or GPU UUIDs (``GPU-…``, a unique prefix is
    enough); as in CUDA, the list ends at the first entry that names no GPU ("" or "-1": none).
    Integers are taken as NVML's (PCI bus) order, which is CUDA's with
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` and, on the usual box of identical GPUs, without it. MIG
    instances are not mapped (the list ends there).
    """
    if cuda_visible is None:
        return list(range(len(uuids)))
    out: list[int] = []
    for raw in cuda_visible.split(","):
        entry = raw.strip()
        if entry.lstrip("+-").isdigit():
            index = int(entry)
            if not 0 <= index < len(uuids):
                break
        else:
            prefix = entry if entry.startswith("GPU-") else "GPU-" + entry
            matches = [i for i, u in enumerate(uuids) if entry and u.startswith(prefix)]
            if len(matches) != 1:
                break
            index = matches[0]
        if index in out:
            break  # CUDA refuses a list naming a GPU twice
        out.append(index)
    return out


def short_name(name: str) -> str:
    """A GPU's name without the vendor's words: "NVIDIA H100 80GB HBM3" -> "H100 80GB HBM3"."""
    for word in _VENDOR:
        if name.startswith(word):
            name = name[len(word) :]
    return name.strip()


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:
        pass


def sample_cost(samples: int = 200) -> float:
    """Seconds one :meth:`SystemSampler.sample` takes on this machine (median; NVML started if it can be)."""
    sampler = SystemSampler(lambda event: None)
    sampler._prime_cpu()
    sampler._start_nvml()
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        sampler.sample()
        times.append(time.perf_counter() - t0)
    sampler.stop()
    times.sort()
    return times[len(times) // 2]


class _Gate(EventReader):
    """:meth:`SystemSampler.gate`'s sink: ``log``, with the sampler started and stopped around it."""

    def __init__(self, sampler: SystemSampler, log: Emit) -> None:
        self.sampler, self.log = sampler, log

    def __call__(self, event: Event) -> None:
        if not self.dispatch(event):
            self.log(event)

    @on(RunStarted)
    def _started(self, ev: RunStarted) -> None:
        self.log(ev)
        self.sampler.start()

    @on(Finished)
    def _finished(self, ev: Finished) -> None:
        self.sampler.stop()
        self.log(ev)
