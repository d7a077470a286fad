"""Demo data from scikit-learn's bundled datasets (no download): standardized tensors.

Each function returns (train, val) TensorDatasets with a fixed, seeded split. Features are
standardized with the training split's mean and standard deviation only.
"""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset


def _split(x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int) -> tuple[TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g)
    n_val = int(round(len(x) * val_fraction))
    val_idx, train_idx = order[:n_val], order[n_val:]
    mean = x[train_idx].mean(0)
    std = x[train_idx].std(0)
    std[std < 1e-6] = 1.0  # constant columns (digits has blank pixels) stay as they are
    x = (x - mean) / std
    return TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[val_idx], y[val_idx])


def digits(val_fraction: float = 0.2, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """8x8 handwritten digits, 10 classes (1797 samples): long class-index targets."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    return _split(x, y, val_fraction, seed)


def breast_cancer(val_fraction: float = 0.2, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Wisconsin breast cancer, binary (569 samples): float 0/1 targets of shape (N, 1)."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    x = torch.tensor(d.data, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.float32).unsqueeze(1)
    return _split(x, y, val_fraction, seed)


def diabetes(val_fraction: float = 0.2, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Diabetes progression, regression (442 samples): standardized float targets (N, 1)."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    x = torch.tensor(d.data, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.float32).unsqueeze(1)
    y = (y - y.mean()) / y.std()
    return _split(x, y, val_fraction, seed)


def wine(val_fraction: float = 0.3, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Wine cultivars, 3 classes (178 samples): long class-index targets."""
    from sklearn.datasets import load_wine

    d = load_wine()
    x = torch.tensor(d.data, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    return _split(x, y, val_fraction, seed)


def rare_cancer(
    positives: float = 0.05, val_fraction: float = 0.3, seed: int = 0
) -> tuple[TensorDataset, TensorDataset]:
    """Wisconsin breast cancer with malignant tumours made rare: every benign sample and as many
    malignant ones (the positives, 1.0) as make ``positives`` of the whole, chosen by ``seed``."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    x = torch.tensor(d.data, dtype=torch.float32)
    malignant = torch.tensor(d.target == 0)
    benign_idx, malignant_idx = (~malignant).nonzero().squeeze(1), malignant.nonzero().squeeze(1)
    keep = round(len(benign_idx) * positives / (1 - positives))
    g = torch.Generator().manual_seed(seed)
    chosen = malignant_idx[torch.randperm(len(malignant_idx), generator=g)[:keep]]
    idx = torch.cat([benign_idx, chosen])
    y = malignant[idx].float().unsqueeze(1)
    return _split(x[idx], y, val_fraction, seed)
