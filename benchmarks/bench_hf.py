"""What ``TuiloopCallback`` costs a Hugging Face ``Trainer`` step.

The same tiny GPT-2 (2 layers, 32 wide, a vocabulary of 100, sequences of 32 tokens, batch 8,
AdamW, linear schedule, one CPU thread) trained by ``transformers.Trainer`` with and without the
callback, alternating, several rounds, in one process. A timing callback reads two clocks at the
end of every step: the CPU time of the whole process (every thread of it, tuiloop's socket,
signal and sampler threads included) and the wall clock. A training's time per step is the
median over blocks of ``--block`` steps (after the first ``--warmup``) of the block's mean.
Another process that takes the CPU moves the wall clock of a round far more than its CPU time,
but on a shared machine both spread by more than 1%. With the callback every step also obeys
the commands (a plain attribute read) and every ``logging_steps`` writes the Trainer's log as a
step event; the run directory, its socket and the machine sampler live as they do in use.
Evaluation and checkpoints are off in both.

It prints each round, the median ratios (with / without; the target is under 1.01) and, measured
directly, the CPU time spent inside the callback's hooks per step (less the cost of reading the
clock) and the CPU time per step of the process's other threads against the same without the
callback (tuiloop's control socket, signal and machine-sampling threads): the figures that other
work on the machine, and the spread between one training and the next, move least.

    python benchmarks/bench_hf.py
    python benchmarks/bench_hf.py --rounds 11 --steps 400 --logging-steps 1
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def trainer_time(
    steps: int, logging_steps: int, warmup: int, block: int, with_tuiloop: bool
) -> tuple[float, float, float, float]:
    """CPU seconds per step of one training, wall seconds per step, seconds per step inside
    tuiloop's hooks, and the CPU seconds per step of the process's threads but the main one."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from tuiloop.integrations.transformers import TuiloopCallback

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.cpu: list[float] = []
            self.wall: list[float] = []
            self.main: list[float] = []  # the main thread's CPU time

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.cpu.append(time.process_time())
            self.wall.append(time.perf_counter())
            self.main.append(time.thread_time())

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2))
    ids = (torch.randint(0, 100, (steps * 8, 1)) + torch.arange(32)) % 100
    data = [{"input_ids": row, "labels": row} for row in ids]
    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="tuiloop-bench-hf-") as tmp:
        args = TrainingArguments(
            str(Path(tmp) / "out"),
            per_device_train_batch_size=8,
            max_steps=steps,
            logging_steps=logging_steps,
            eval_strategy="no",
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        )
        callbacks: list[Any] = [clock]
        inside = [0.0]
        if with_tuiloop:
            callbacks.append(timed(TuiloopCallback(run_dir=Path(tmp) / "run"), inside))
        trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks)
        trainer.remove_callback(PrinterCallback)  # its print of every log is the same work with or without tuiloop
        trainer.train()
    cpu, main = clock.cpu[warmup:], clock.main[warmup:]
    others = ((cpu[-1] - cpu[0]) - (main[-1] - main[0])) / (len(cpu) - 1)
    return per_step(cpu, block), per_step(clock.wall[warmup:], block), inside[0] / steps, others


def per_step(t: list[float], block: int) -> float:
    """The median over blocks of ``block`` steps of the block's time per step."""
    return statistics.median((t[i + block] - t[i]) / block for i in range(0, len(t) - block, block))


def timed(callback: Any, total: list[float]) -> Any:
    """``callback`` with the CPU time its step, log and epoch hooks take added to ``total[0]`` (this
    thread's CPU time: a moment when the machine runs another process is not counted), less what
    reading that clock costs (a system call: a few microseconds on a virtual machine)."""
    reading = clock_cost()
    for name in ("on_step_end", "on_log", "on_epoch_begin", "on_epoch_end"):
        hook = getattr(callback, name)

        def clocked(*args: Any, _hook: Any = hook, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return _hook(*args, **kwargs)
            finally:
                total[0] += time.thread_time() - t0 - reading

        setattr(callback, name, clocked)
    return callback


def clock_cost(n: int = 50000) -> float:
    """What a pair of ``thread_time()`` readings around nothing measures, on average."""
    spans = 0.0
    for _ in range(n):
        a = time.thread_time()
        spans += time.thread_time() - a
    return spans / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per training (default 600)")
    parser.add_argument("--block", type=int, default=50, help="steps per timed block (default 50)")
    parser.add_argument("--warmup", type=int, default=20, help="first steps left out of the timing (default 20)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    parser.add_argument(
        "--logging-steps", type=int, nargs="+", default=[10, 1], help="the Trainer's logging_steps (default: 10 1)"
    )
    args = parser.parse_args()
    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    for every in args.logging_steps:
        print(f"[logging_steps={every}] {args.steps} steps per training, {args.rounds} alternating rounds")
        cpu_ratios, wall_ratios, costs, insides, threads, steps = [], [], [], [], [], []
        run = lambda tuiloop, every=every: trainer_time(args.steps, every, args.warmup, args.block, tuiloop)  # noqa: E731
        for r in range(args.rounds):
            if r % 2 == 0:
                (cpu_with, wall_with, inside, others_with), (cpu_without, wall_without, _, others_without) = (
                    run(True),
                    run(False),
                )
            else:
                (cpu_without, wall_without, _, others_without), (cpu_with, wall_with, inside, others_with) = (
                    run(False),
                    run(True),
                )
            cpu_ratios.append(cpu_with / cpu_without)
            wall_ratios.append(wall_with / wall_without)
            costs.append((cpu_with - cpu_without) * 1e6)
            insides.append(inside)
            threads.append(others_with - others_without)
            steps.append(cpu_without)
            print(
                f"  round {r + 1}: CPU {cpu_with * 1e3:6.3f} vs {cpu_without * 1e3:6.3f} ms/step (ratio {cpu_ratios[-1]:.4f})   "
                f"wall {wall_with * 1e3:6.3f} vs {wall_without * 1e3:6.3f} ms/step (ratio {wall_ratios[-1]:.4f})   "
                f"in the callback {inside * 1e6:5.1f} us/step, its threads {threads[-1] * 1e6:+5.1f} us/step",
                flush=True,
            )
        inside, step, thread = statistics.median(insides), statistics.median(steps), statistics.median(threads)
        print(
            f"  median CPU ratio {statistics.median(cpu_ratios):.4f} (rounds {min(cpu_ratios):.4f}-{max(cpu_ratios):.4f}); "
            f"median wall ratio {statistics.median(wall_ratios):.4f}; "
            f"median CPU difference {statistics.median(costs):+.0f} us per step; "
            f"in the callback {inside * 1e6:.1f} us per step and in its threads {thread * 1e6:+.1f} us, "
            f"{(inside + thread) / step:.2%} of a {step * 1e3:.2f} ms step"
        )


if __name__ == "__main__":
    main()
