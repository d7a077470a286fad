"""A small character-level transformer (GPT), written here, and the text it learns from.

The model follows nanoGPT's convention: ``forward(idx, targets)`` returns ``(logits, loss)``,
so the spec says ``[loss] target = "model"`` and the batch ``(x, y)`` goes to it whole. The text
is the help pages that ship with Python itself (``pydoc_data.topics``, about 465 kB of English):
nothing is downloaded.

Sample the trained model from its best checkpoint (from the repository root, after
``tuiloop run demos/chargpt.toml``)::

    cd demos && python -c "import torch, glob; from gpt import CharGPT; m = CharGPT(); \
    m.load_state_dict(torch.load(sorted(glob.glob('../runs/chargpt-*/checkpoints/best.pt'))[-1], \
    weights_only=True)['model_state_dict']); m.eval(); \
    print(bytes(m.generate(torch.tensor([list(b'The for statement ')]), 200)[0].tolist()).decode(errors='replace'))"
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset


def pydoc_text(block_size: int = 128, val_fraction: float = 0.1) -> tuple[TensorDataset, TensorDataset]:
    """Python's own help text as UTF-8 bytes, cut into (input, next-byte target) windows.

    The last ``val_fraction`` of the text is the validation split, so no window of it is trained on.
    """
    import pydoc_data.topics

    text = "\n\n".join(pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics))
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.long)
    windows = (len(data) - 1) // block_size
    x = data[: windows * block_size].view(windows, block_size)
    y = data[1 : windows * block_size + 1].view(windows, block_size)
    n_val = max(1, int(windows * val_fraction))
    return TensorDataset(x[:-n_val], y[:-n_val]), TensorDataset(x[-n_val:], y[-n_val:])


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, then an MLP, each with a residual."""

    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln1 = nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd), nn.Dropout(dropout)
        )
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(self.ln2(x))


class CharGPT(nn.Module):
    """A byte-level GPT: 256 symbols in, the next byte's logits out."""

    def __init__(
        self,
        block_size: int = 128,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.1,
        vocab_size: int = 256,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.tok = nn.Embedding(vocab_size, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(Block(n_embd, n_head, dropout) for _ in range(n_layer)))
        self.ln = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.tok.weight = self.head.weight  # tied embeddings, as GPT-2
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        t = idx.shape[1]
        x = self.drop(self.tok(idx) + self.pos(torch.arange(t, device=idx.device)))
        x = self.ln(self.blocks(x))
        if targets is None:  # generating: only the last position's logits
            return self.head(x[:, -1:, :]), None
        logits = self.head(x)
        return logits, F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), targets.view(-1))

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, new_tokens: int, temperature: float = 0.8) -> torch.Tensor:
        """Continue ``idx`` by ``new_tokens`` bytes, sampling."""
        for _ in range(new_tokens):
            logits, _ = self(idx[:, -self.block_size :])
            probs = F.softmax(logits[:, -1, :] / temperature, dim=-1)
            idx = torch.cat([idx, torch.multinomial(probs, 1)], dim=1)
        return idx


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """A linear warm-up to the optimizer's learning rate, then a cosine decay to ``min_ratio`` of it."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
