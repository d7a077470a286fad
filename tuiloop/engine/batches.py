"""Batches for one data split, in an order fixed by (seed, epoch), already on the device.

Two paths:

* In-memory ``TensorDataset`` with ``num_workers = 0``: one ``randperm`` per epoch; the rows
  of up to ``CHUNK_BYTES`` worth of batches are gathered with one ``index_select`` per tensor
  and split into batch views. Same samples, same batch composition rules and the same dtypes
  as a shuffled ``DataLoader`` with the default collate, without the per-sample
  ``__getitem__`` and collate overhead (about 75 us per batch of 32 on a CPU, against 1-2 us
  here). On CUDA a dataset up to ``DEVICE_CACHE_BYTES`` is copied to the GPU once.
* Anything else: a ``DataLoader`` whose generator is reseeded each epoch (its workers too, as
  they restart each epoch unless ``persistent_workers``). A ``DataLoader`` the user built is
  used as it is: its order and its workers' seeds come from the global RNG when an epoch starts.

Because the order depends only on (seed, epoch), or on the RNG state saved at the epoch's start,
a run resumed mid-epoch regenerates the epoch's order and skips the batches already done.

In a distributed run each rank takes its shard of the epoch's order: ``order[rank::world]``.
The training split is padded (with its first samples, as ``DistributedSampler`` does) so every
rank takes the same number of steps; the validation split is not, so each sample is evaluated
exactly once. A user's DataLoader with a plain random or sequential sampler is rebuilt with a
``DistributedSampler``; one with a ``DistributedSampler`` gets ``set_epoch`` every epoch.

A Ctrl+C in a terminal reaches the whole process group, DataLoader workers included, and a
worker that died of it would fail the run that is stopping gracefully. So workers start with
SIGINT blocked (``fork`` keeps the mask), ignore it once they run (``spawn`` and ``forkserver``
start with a fresh mask), and a worker that dies while a stop is under way ends the run as
stopped (:func:`worker_died`).

A worker ends with its training process, however that ends: on Linux the kernel kills it when
its parent dies (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the training process leaves no worker
behind, not even one stuck in the user's ``__getitem__`` (the DataLoader's own watchdog looks for
its parent only between samples, every 5 s).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sized
from typing import Any, cast

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from tuiloop.engine.checkpoint import rng_state, set_rng_state
from tuiloop.engine.device import to_device

DEVICE_CACHE_BYTES = 1 << 30
# Rows gathered at once: large enough that per-batch calls vanish, small enough to stay in cache.
CHUNK_BYTES = 1 << 20


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of one epoch."""
    return (seed * 1_000_003 + epoch) % (1 << 63)


class Batches:
    """Iterates one split: ``for batch in batches.epoch(e, start=k)`` yields on-device batches."""

    def __init__(
        self,
        source: Dataset | DataLoader,
        device: torch.device,
        batch_size: int,
        shuffle: bool,
        drop_last: bool = False,
        num_workers: int = 0,
        pin_memory: bool | str = "auto",
        seed: int = 0,
        persistent_workers: bool = False,
        multiprocessing_context: str | None = None,
        rank: int = 0,
        world_size: int = 1,
        even_shards: bool = True,
    ) -> None:
        """``even_shards``: pad the split so every rank gets as many batches (training);
        without it each sample goes to exactly one rank (validation)."""
        self.device = device
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.world_size, self.even_shards = rank, world_size, even_shards
        self.on_cuda = device.type == "cuda"
        pin = self.on_cuda if pin_memory == "auto" else bool(pin_memory)
        self.non_blocking = pin and self.on_cuda
        self._tensors: tuple[torch.Tensor, ...] | None = None
        self._loader: DataLoader | None = None
        self._generator = torch.Generator()
        self.served = 0  # batches handed out so far, every epoch
        self.user_loader = isinstance(source, DataLoader)
        if self.user_loader and world_size > 1:
            rebuilt = self._shard_user_loader(cast(DataLoader, source))  # user_loader: source is one
            self.user_loader = rebuilt is source  # a rebuilt loader's order comes from tuiloop's seed
            source = rebuilt
        if isinstance(source, DataLoader):
            self._loader = source
            self.batch_size = source.batch_size
            if source.num_workers > 0 and not isinstance(source.worker_init_fn, QuietWorker):
                source.worker_init_fn = QuietWorker(source.worker_init_fn)
        elif isinstance(source, TensorDataset) and num_workers == 0:
            self._setup_tensors(source.tensors)
            self.batch_size = batch_size
            self.drop_last = drop_last
        else:
            sampler = self._sampler(source, shuffle, drop_last)
            self._loader = DataLoader(
                source,
                batch_size=batch_size,
                shuffle=shuffle if sampler is None else None,
                sampler=sampler,
                drop_last=drop_last,
                num_workers=num_workers,
                pin_memory=pin and self.on_cuda,
                generator=self._generator,
                worker_init_fn=QuietWorker(None) if num_workers > 0 else None,
                persistent_workers=persistent_workers and num_workers > 0,
                multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
            )
            self.batch_size = batch_size

    def _sampler(self, dataset: Dataset, shuffle: bool, drop_last: bool) -> Any:
        """This rank's share of the split, or None for a single process."""
        if self.world_size == 1:
            return None
        if self.even_shards:
            return DistributedSampler(
                dataset, self.world_size, self.rank, shuffle=shuffle, seed=self.seed, drop_last=drop_last
            )
        return range(self.rank, len(cast(Sized, dataset)), self.world_size)  # a sampled dataset has a length

    def _shard_user_loader(self, loader: DataLoader) -> DataLoader:
        """A user's DataLoader made to take this rank's shard (as Lightning does), or refused."""
        sampler = loader.sampler
        if isinstance(sampler, DistributedSampler):
            return loader
        if not isinstance(sampler, (RandomSampler, SequentialSampler)) or loader.batch_sampler is None:
            raise ValueError(
                f"in a distributed run each rank needs its shard of the data, and this DataLoader's {type(sampler).__name__} cannot be split by tuiloop; "
                "give it a torch.utils.data.distributed.DistributedSampler, or return Datasets and let tuiloop batch them"
            )
        shuffle = isinstance(sampler, RandomSampler)
        return DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            sampler=self._sampler(loader.dataset, shuffle, loader.drop_last),
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            drop_last=loader.drop_last,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context,
            generator=self._generator,
            prefetch_factor=loader.prefetch_factor if loader.num_workers else None,
            persistent_workers=loader.persistent_workers,
        )

    def _setup_tensors(self, tensors: tuple[torch.Tensor, ...]) -> None:
        size = sum(t.numel() * t.element_size() for t in tensors)
        self._cached = self.device.type != "cpu" and size <= DEVICE_CACHE_BYTES
        if self._cached:
            tensors = tuple(t.to(self.device) for t in tensors)
        self._tensors = tensors
        self._total = len(tensors[0])
        self._n = self._shard_size(self._total)
        self._row_bytes = max(1, sum(math.prod(t.shape[1:]) * t.element_size() for t in tensors))

    @property
    def order_from_global_rng(self) -> bool:
        """True for a user's DataLoader: its shuffling and worker seeds draw from the global RNG."""
        return self.user_loader

    @property
    def persistent_workers(self) -> bool:
        """Workers that live across epochs keep their RNG streams: a resume cannot replay them."""
        return bool(self._loader is not None and self._loader.num_workers > 0 and self._loader.persistent_workers)

    def _shard_size(self, total: int) -> int:
        if self.world_size == 1:
            return total
        if self.even_shards:
            return math.ceil(total / self.world_size)
        return len(range(self.rank, total, self.world_size))

    def _shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's indices of the epoch's order (padded with its first ones for even shards)."""
        if self.world_size == 1:
            return order
        if self.even_shards:
            pad = self._n * self.world_size - len(order)
            if pad:
                order = torch.cat([order, order[:pad]])
        return order[self.rank :: self.world_size]

    @property
    def num_samples(self) -> int | None:
        """Samples in the whole split (all ranks together)."""
        if self._tensors is not None:
            return self._total
        try:
            return len(self._loader.dataset)  # type: ignore[union-attr, arg-type]  # set without _tensors
        except TypeError:
            return None

    def empty(self) -> str:
        """Why the split is known to give no batch ('0 samples', ...); '' when it gives some, or
        when an iterable dataset of unknown length does not say."""
        samples, batches = self.num_samples, self.steps()
        if samples == 0:
            return "0 samples"
        if batches == 0:
            return f"{samples} samples, fewer than one batch of {self.batch_size} with drop_last"
        return ""

    def __len__(self) -> int:
        if self._tensors is not None:
            assert self.batch_size is not None  # tensors are always batched by tuiloop
            full, rest = divmod(self._n, self.batch_size)
            return full + (1 if rest and not self.drop_last else 0)
        return len(self._loader)  # type: ignore[arg-type]  # a loader without _tensors; TypeError if unsized

    def steps(self) -> int | None:
        """Batches per epoch, or None for an iterable dataset of unknown length."""
        try:
            return len(self)
        except TypeError:
            return None

    def epoch(self, epoch: int, start: int = 0, epoch_rng: dict[str, Any] | None = None) -> Iterator[Any]:
        """The batches of ``epoch`` (counted from 0), skipping the first ``start`` of them.

        ``epoch_rng`` is the RNG state at the epoch's start, for a resumed user DataLoader.
        """
        self._generator.manual_seed(epoch_seed(self.seed, epoch))
        if self._loader is not None and isinstance(self._loader.sampler, DistributedSampler):
            self._loader.sampler.set_epoch(epoch)
        if self._tensors is not None:
            return self._served(self._tensor_batches(start))
        # Skipping loads the batches; a dataset that draws random numbers (augmentation)
        # must not advance the RNGs a resumed checkpoint has just restored.
        state = rng_state() if start else None
        if start and epoch_rng is not None and self.order_from_global_rng:
            set_rng_state(epoch_rng)  # the user's sampler draws the epoch's order from it
        quiet = self._loader.worker_init_fn  # type: ignore[union-attr]  # a loader without _tensors
        if isinstance(quiet, QuietWorker):
            quiet.started_here()
        with _no_sigint():
            it = iter(self._loader)  # type: ignore[arg-type]  # a loader without _tensors; workers start here
        if state is not None:
            for _ in itertools.islice(it, start):
                pass
            set_rng_state(state)
        return self._served(to_device(b, self.device, self.non_blocking) for b in it)

    def _served(self, batches: Iterator[Any]) -> Iterator[Any]:
        """``batches``, counted in :attr:`served` as each is handed out (the stall watch's heartbeat)."""
        for batch in batches:
            self.served += 1
            yield batch

    def close(self) -> None:
        """Shut down worker processes this object started (a user's DataLoader is left alone)."""
        if self._loader is not None and not self.user_loader:
            it = getattr(self._loader, "_iterator", None)
            if it is not None and hasattr(it, "_shutdown_workers"):
                it._shutdown_workers()

    def _tensor_batches(self, start: int) -> Iterator[tuple[torch.Tensor, ...]]:
        n, bs = self._n, self.batch_size
        assert bs is not None  # tensors are always batched by tuiloop
        if self.shuffle:
            order: torch.Tensor | None = self._shard(torch.randperm(self._total, generator=self._generator))
        elif self.world_size > 1:
            order = self._shard(torch.arange(self._total))
        else:
            order = None  # contiguous slices
        if order is not None and self._cached:
            order = order.to(self.device)
        stop = n - n % bs if self.drop_last else n
        tensors = self._tensors
        assert tensors is not None
        per_chunk = max(1, CHUNK_BYTES // (bs * self._row_bytes))
        span = per_chunk * bs
        # Chunks start at fixed batch indices, so a run resumed at batch `start` gets every batch
        # at the same offset in the same chunk as the uninterrupted run (bitwise-equal kernels).
        skip = start % per_chunk
        copy = not self._cached and self.device.type != "cpu"
        for lo in range((start - skip) * bs, stop, span):
            hi = min(lo + span, stop)
            if order is None:
                chunk = tuple(t[lo:hi] for t in tensors)
            else:
                idx = order[lo:hi]
                chunk = tuple(t.index_select(0, idx) for t in tensors)
            if copy:
                if self.non_blocking:  # an async copy needs page-locked source memory
                    chunk = tuple(t.pin_memory() for t in chunk)
                chunk = tuple(t.to(self.device, non_blocking=self.non_blocking) for t in chunk)
            batches: Iterator[tuple[torch.Tensor, ...]] = zip(*(t.split(bs) for t in chunk), strict=True)
            if skip:
                batches, skip = itertools.islice(batches, skip, None), 0
            yield from batches


@contextlib.contextmanager
def _no_sigint() -> Iterator[None]:
    """Block SIGINT in this thread while DataLoader workers start: they inherit the mask."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class QuietWorker:
    """A DataLoader ``worker_init_fn``: the worker ignores Ctrl+C (its training process decides)
    and forgets the signal plumbing a forked worker inherits; then the user's own init runs."""

    def __init__(self, then: Callable[[int], None] | None) -> None:
        self.then = then
        self.parent = 0  # the process that starts the workers, and
        self.from_main_thread = False  # whether its main thread does (it outlives the workers)

    def started_here(self) -> None:
        """Workers are about to start from this process and thread (before ``iter(loader)``)."""
        self.parent = os.getpid()
        self.from_main_thread = threading.current_thread() is threading.main_thread()

    def __call__(self, worker_id: int) -> None:
        signal.set_wakeup_fd(-1)  # a forked copy of the training process's: not this process's to write
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the DataLoader ends stuck workers with it
        if self.from_main_thread:  # the kernel's "parent" is the thread that started us
            _die_with_parent(self.parent)
        if self.then is not None:
            self.then(worker_id)


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when ``parent``, the training process, dies; if it died
    meanwhile, go now. A worker of a ``forkserver`` is the server's child: the DataLoader's
    watchdog ends it."""
    if not sys.platform.startswith("linux") or os.getppid() != parent:
        return
    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the kernel was told
        os._exit(1)


def worker_died(error: BaseException) -> bool:
    """True for the DataLoader's error when one of its worker processes is gone."""
    return isinstance(error, RuntimeError) and "DataLoader worker" in str(error) and "exited unexpectedly" in str(error)
