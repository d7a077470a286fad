"""Models for the demos: a plain MLP with optional dropout."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """in_features -> hidden (x layers, ReLU, dropout) -> out_features raw outputs (logits)."""

    def __init__(
        self, in_features: int, out_features: int, hidden: int = 64, layers: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout:
                blocks.append(nn.Dropout(dropout))
            width = hidden
        blocks.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
