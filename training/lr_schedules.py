"""Learning-rate schedules of fine-tuning, made by diffusers' ``get_scheduler`` (a ``LambdaLR``; its state is the
step count, so a resumed run continues the same sequence).

- ``constant``: linear warm-up from 0 over ``warmup_steps``, then constant (the paper's stage 1: 10k warm-up);
  diffusers' ``constant_with_warmup``.
- ``linear``: linear warm-up, then linear decay to 0 at ``total_steps`` (the paper's stage 2); diffusers' ``linear``.

The multiplier of optimizer step k (counted from 0) is k / warmup_steps during the warm-up.
"""

from __future__ import annotations

import torch

# our schedule name -> diffusers' name
DIFFUSERS_SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear"}
SCHEDULES = tuple(DIFFUSERS_SCHEDULES)


def make_scheduler(optimizer: torch.optim.Optimizer, kind: str, warmup_steps: int, total_steps: int):
    if kind not in DIFFUSERS_SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    from diffusers.optimization import get_scheduler

    return get_scheduler(DIFFUSERS_SCHEDULES[kind], optimizer, num_warmup_steps=int(warmup_steps),
                         num_training_steps=int(total_steps))
