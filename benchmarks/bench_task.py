"""The benchmark's workload: a small MLP and a small in-memory classification dataset.

Imported by ``bench_engine.py`` for the plain loop and copied next to the generated spec for
``tuiloop run``, so both sides train exactly the same model on exactly the same data.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

# One CPU thread everywhere: per-step overhead is what this benchmark is about, and a
# subprocess running `tuiloop run` imports this module before it builds anything.
torch.set_num_threads(1)


class MLP(nn.Module):
    """in -> hidden -> hidden -> classes, ReLU."""

    def __init__(self, in_features: int = 64, hidden: int = 128, classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def data(
    samples: int = 4096, features: int = 64, classes: int = 10, val_fraction: float = 0.25, seed: int = 1234
) -> tuple[TensorDataset, TensorDataset]:
    """Gaussian features labelled by a fixed random linear teacher (learnable, not trivial)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, features, generator=g)
    teacher = torch.randn(features, classes, generator=g)
    y = (x @ teacher + 0.5 * torch.randn(samples, classes, generator=g)).argmax(1)
    n_val = int(samples * val_fraction)
    return TensorDataset(x[n_val:], y[n_val:]), TensorDataset(x[:n_val], y[:n_val])
