"""Learning-rate schedules as multipliers of the base rate per optimizer step (picklable, for exact resume).

- ``constant``: linear warm-up from 0 over ``warmup_steps``, then constant (the paper's stage 1: 10k warm-up).
- ``linear``: linear warm-up, then linear decay to 0 at ``total_steps`` (the paper's stage 2).
"""

from __future__ import annotations

import torch

SCHEDULES = ("constant", "linear")


class LearningRateMultiplier:
    def __init__(self, kind: str, warmup_steps: int, total_steps: int):
        if kind not in SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
        self.kind, self.warmup_steps, self.total_steps = kind, int(warmup_steps), int(total_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        remaining = self.total_steps - step
        return max(0.0, remaining / max(1, self.total_steps - self.warmup_steps))


def make_scheduler(optimizer: torch.optim.Optimizer, kind: str, warmup_steps: int, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LearningRateMultiplier(kind, warmup_steps, total_steps))
