"""What Lightning's ``TuiloopCallback`` costs a ``Trainer`` step.

The same small MLP (8 -> 256 -> 256 -> 1, batch 64, SGD, a step-wise LambdaLR, one CPU thread)
trained by ``lightning.Trainer`` with and without the callback, alternating, several rounds, in
one process; Lightning's progress bar, logger and checkpoints off in both. A timing callback
reads the process's CPU time (every thread: tuiloop's socket, signal and sampler threads
included) at the end of every step; a training's time per step is the median over blocks of 50
steps (after the first 50) of the block's mean. It also measures directly the CPU time spent
inside the callback's step hooks (``on_train_batch_start`` / ``_end``), the figure that other
work on a shared machine moves least.

    python benchmarks/bench_lightning.py --rounds 7 --steps 600
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def train(steps: int, with_tuiloop: bool, where: Path) -> tuple[float, float]:
    """CPU seconds per step, and CPU seconds per step inside tuiloop's step hooks."""
    import lightning as L
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from tuiloop.integrations.lightning import TuiloopCallback

    class Model(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.mse_loss(self.net(x).squeeze(-1), y)

        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=0.01)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.999**s)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.cpu: list[float] = []

        def on_train_batch_end(self, *args: Any) -> None:
            self.cpu.append(time.process_time())

    hooks = [0.0]
    callbacks: list[Any] = [Clock()]
    if with_tuiloop:
        cb = TuiloopCallback(run_dir=where / f"run-{time.perf_counter_ns()}", handle_signals=False)
        for name in ("on_train_batch_start", "on_train_batch_end"):
            hook = getattr(cb, name)

            def timed(*args: Any, _hook: Any = hook) -> None:
                t = time.thread_time()
                _hook(*args)
                hooks[0] += time.thread_time() - t

            setattr(cb, name, timed)
        callbacks.insert(0, cb)
    x = torch.randn(64 * 100, 8)
    loader = DataLoader(TensorDataset(x, x.sum(1)), batch_size=64)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=where,
        callbacks=callbacks,
    )
    trainer.fit(Model(), loader)
    cpu = callbacks[-1].cpu
    blocks = [(cpu[i + 50] - cpu[i]) / 50 for i in range(50, len(cpu) - 50, 50)]
    return statistics.median(blocks), hooks[0] / steps


def main() -> None:
    import logging

    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=600)
    a = p.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    ratios, hook_s, step_s = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            first = r % 2 == 0  # alternate which goes first
            runs = {}
            for with_tuiloop in (first, not first):
                runs[with_tuiloop] = train(a.steps, with_tuiloop, Path(tmp))
            (without, _), (with_, hooks) = runs[False], runs[True]
            ratios.append(with_ / without)
            hook_s.append(hooks)
            step_s.append(without)
            print(
                f"round {r + 1}: {without * 1e3:.3f} ms/step without, {with_ * 1e3:.3f} with, hooks {hooks * 1e6:.1f} us"
            )
    hooks, step = statistics.median(hook_s), statistics.median(step_s)
    print(f"median ratio with/without (CPU): {statistics.median(ratios):.3f}")
    print(
        f"in the callback's step hooks: {hooks * 1e6:.1f} us per step, {hooks / step:.2%} of a {step * 1e3:.2f} ms step"
    )


if __name__ == "__main__":
    main()
