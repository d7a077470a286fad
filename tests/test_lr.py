"""Halving or doubling the learning rate while a scheduler runs (the monitor's - and + keys, a
resume with a new lr): the schedule goes on from the scaled level, whatever the scheduler."""

from __future__ import annotations

import pytest
import torch

from tuiloop.engine.lr import scale_lr

S = torch.optim.lr_scheduler

SCHEDULERS = {
    "StepLR": lambda o: S.StepLR(o, step_size=3, gamma=0.5),
    "CosineAnnealingLR": lambda o: S.CosineAnnealingLR(o, T_max=20),
    "LambdaLR": lambda o: S.LambdaLR(o, lambda s: 1.0 / (1 + s)),
    "OneCycleLR": lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=40),
    "CosineAnnealingWarmRestarts": lambda o: S.CosineAnnealingWarmRestarts(o, T_0=5),
    "CyclicLR": lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=4),
    "LinearLR": lambda o: S.LinearLR(o, start_factor=0.25, total_iters=8),
    "PolynomialLR": lambda o: S.PolynomialLR(o, total_iters=30, power=2.0),
    "ExponentialLR": lambda o: S.ExponentialLR(o, gamma=0.9),
    # warm-up then cosine: the usual transformer schedule; its children hold their own base values
    "SequentialLR": lambda o: S.SequentialLR(
        o, [S.LinearLR(o, start_factor=0.1, total_iters=4), S.CosineAnnealingLR(o, T_max=20)], milestones=[4]
    ),
    "ChainedScheduler": lambda o: S.ChainedScheduler(
        [S.ExponentialLR(o, gamma=0.95), S.StepLR(o, step_size=5, gamma=0.5)]
    ),
}


def lrs(name: str, factor: float | None, at: int = 2, steps: int = 14) -> list[float]:
    opt = torch.optim.SGD(
        [
            {"params": [torch.nn.Parameter(torch.zeros(2))]},
            {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.02},
        ],
        lr=0.05,
        momentum=0.9,
    )
    sched = SCHEDULERS[name](opt)
    out = []
    for step in range(steps):
        if factor is not None and step == at:
            scale_lr(opt, sched, factor)
        opt.step()
        sched.step()
        out.append(opt.param_groups[1]["lr"])
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_the_schedule_goes_on_from_the_scaled_rate(name: str, factor: float) -> None:
    plain, scaled = lrs(name, None), lrs(name, factor)
    assert len(plain) == len(scaled) == 14
    assert scaled[:2] == plain[:2], (name, plain, scaled)  # the steps before the change at step 2
    # from the change on, past every milestone and restart: the same shape, scaled
    assert scaled[2:] == pytest.approx([a * factor for a in plain[2:]], rel=1e-6), (name, plain, scaled)


def test_without_a_scheduler_every_group_is_scaled() -> None:
    opt = torch.optim.AdamW(
        [
            {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1e-3},
            {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1e-4},
        ]
    )
    scale_lr(opt, None, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [5e-4, 5e-5]
