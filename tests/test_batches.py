"""The fast in-memory batching path: same batches as a DataLoader would make, an order fixed by
(seed, epoch), and mid-epoch restarts that reproduce the uninterrupted epoch exactly."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tuiloop.engine import batches as batches_module
from tuiloop.engine.batches import Batches

CPU = torch.device("cpu")


def dataset(n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(n)
    return TensorDataset(torch.randn(n, 3, 5, generator=g), torch.arange(n), torch.rand(n, generator=g) > 0.5)


@pytest.fixture(params=[1 << 20, 700], ids=["one-chunk", "many-chunks"])
def chunk_bytes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Both the whole-epoch gather and chunks smaller than a few batches."""
    monkeypatch.setattr(batches_module, "CHUNK_BYTES", request.param)
    return request.param


@pytest.mark.parametrize(
    "n, batch_size, drop_last", [(100, 16, False), (100, 16, True), (96, 32, False), (5, 8, False)]
)
def test_batches_match_a_shuffled_dataloader_in_shape_dtype_and_coverage(
    chunk_bytes: int, n: int, batch_size: int, drop_last: bool
) -> None:
    data = dataset(n)
    ours = Batches(data, CPU, batch_size, shuffle=True, drop_last=drop_last, seed=7)
    theirs = list(DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=drop_last))
    assert len(ours) == len(theirs)
    for epoch in range(3):
        got = list(ours.epoch(epoch))
        assert [tuple((t.shape, t.dtype) for t in b) for b in got] == [
            tuple((t.shape, t.dtype) for t in b) for b in theirs
        ]
        seen = torch.cat([b[1] for b in got]) if got else torch.empty(0, dtype=torch.long)
        expected = n - n % batch_size if drop_last else n
        assert len(seen) == expected and len(set(seen.tolist())) == expected  # each sample at most once
        for x, i, flag in got:  # rows stay together across the tensors of a sample
            assert torch.equal(x, data.tensors[0][i]) and torch.equal(flag, data.tensors[2][i])
            assert x.is_contiguous()


def test_order_depends_only_on_seed_and_epoch(chunk_bytes: int) -> None:
    data = dataset(200)
    a = Batches(data, CPU, 16, shuffle=True, seed=3)
    b = Batches(data, CPU, 16, shuffle=True, seed=3)
    torch.manual_seed(123)  # the global RNG plays no part
    order = [torch.cat([batch[1] for batch in a.epoch(e)]) for e in (0, 1)]
    torch.manual_seed(456)
    assert torch.equal(torch.cat([batch[1] for batch in b.epoch(1)]), order[1])
    assert torch.equal(torch.cat([batch[1] for batch in b.epoch(0)]), order[0])
    assert not torch.equal(order[0], order[1])
    other_seed = torch.cat([batch[1] for batch in Batches(data, CPU, 16, shuffle=True, seed=4).epoch(0)])
    assert not torch.equal(other_seed, order[0])


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_restart_at_batch_k_is_the_rest_of_the_epoch_laid_out_the_same(chunk_bytes: int, shuffle: bool) -> None:
    """Same values and the same place in memory (offset in its chunk): kernels see identical inputs."""
    data = dataset(150)
    batches = Batches(data, CPU, 16, shuffle=shuffle, seed=1)
    full = list(batches.epoch(2))
    for start in range(len(batches) + 1):
        rest = list(batches.epoch(2, start=start))
        assert len(rest) == len(full) - start
        for got, want in zip(rest, full[start:], strict=True):
            assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
            assert [t.storage_offset() for t in got] == [t.storage_offset() for t in want]


def test_unshuffled_batches_are_in_dataset_order() -> None:
    data = dataset(70)
    got = list(Batches(data, CPU, 32, shuffle=False).epoch(5))
    assert [b[1].tolist() for b in got] == [list(range(0, 32)), list(range(32, 64)), list(range(64, 70))]
