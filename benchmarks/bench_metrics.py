"""What [metrics] cost: one validation pass with F1 + AUROC (torchmetrics) against the same pass without them.

The same MLP and the same binary validation split, evaluated by the engine's own validation
(:meth:`tuiloop.engine.epoch_end.EpochEnd.evaluate`) with and without the metrics, alternating,
several rounds; it prints the median time of each and their ratio. ``--no-validate-args`` passes
``validate_args=False`` to torchmetrics (its per-batch input check reads a value back from the device).

    python benchmarks/bench_metrics.py
    python benchmarks/bench_metrics.py --device cuda --samples 262144 --batch-size 1024
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import TensorDataset
from torchmetrics.classification import BinaryAUROC, BinaryF1Score

from tuiloop.engine.batches import Batches
from tuiloop.engine.trainer import Options, Trainer


def trainer(metrics: dict[str, object], args: argparse.Namespace, data: TensorDataset, device: torch.device) -> Trainer:
    model = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.ReLU(), torch.nn.Linear(128, 1))
    batches = Batches(data, device, args.batch_size, shuffle=False, even_shards=False)
    t = Trainer(
        model, batches, batches, torch.nn.BCEWithLogitsLoss(), torch.optim.SGD(model.parameters(), lr=0.1),
        options=Options(epochs=1), device=device, metrics=metrics,
    )  # fmt: skip
    t.objective.problem = "binary"
    return t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=65536)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-validate-args", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.samples, 32, generator=g)
    y = (x[:, 0] + 0.5 * torch.randn(args.samples, generator=g) > 1.5).float().unsqueeze(1)
    data = TensorDataset(x, y)
    kw = {"validate_args": False} if args.no_validate_args else {}
    plain = trainer({}, args, data, device)
    chosen = trainer({"f1": BinaryF1Score(**kw), "auroc": BinaryAUROC(**kw)}, args, data, device)
    times: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(args.rounds + 1):  # the first round warms up
        for name, t in (("without", plain), ("with", chosen)):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            t.ends.evaluate(t.val_batches, "val_")  # type: ignore[arg-type]  # set above
            times[name].append(time.perf_counter() - start)
    a, b = (statistics.median(times[n][1:]) for n in ("without", "with"))
    print(
        f"{args.samples} samples, batch {args.batch_size}, {device}: without {a * 1e3:.1f} ms, with F1 + AUROC {b * 1e3:.1f} ms, ratio {b / a:.2f}"
    )


if __name__ == "__main__":
    main()
