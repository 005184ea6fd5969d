"""The fine-tuning LR schedules (diffusers' get_scheduler) have the paper's shapes, and a scheduler restored from
its state continues the same sequence."""

import pytest
import torch

from training.lr_schedules import make_scheduler

BASE_LR = 1e-3


def learning_rates(kind: str, warmup: int, total: int, steps: int, resume_at: int | None = None) -> list[float]:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=BASE_LR)
    scheduler = make_scheduler(optimizer, kind, warmup, total)
    rates = []
    for step in range(steps):
        if step == resume_at:  # a new optimizer and scheduler loaded from the saved states, as --resume does
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
            optimizer = torch.optim.AdamW([parameter], lr=BASE_LR)
            scheduler = make_scheduler(optimizer, kind, warmup, total)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_constant_after_a_linear_warm_up():
    rates = learning_rates("constant", warmup=4, total=100, steps=8)
    assert rates == pytest.approx([0.0, 0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3, 1e-3, 1e-3])


def test_linear_decay_to_zero_at_the_last_step():
    rates = learning_rates("linear", warmup=0, total=4, steps=5)
    assert rates == pytest.approx([1e-3, 0.75e-3, 0.5e-3, 0.25e-3, 0.0])


@pytest.mark.parametrize("kind", ["constant", "linear"])
def test_a_restored_scheduler_continues_the_same_sequence(kind):
    assert learning_rates(kind, 3, 10, 10, resume_at=5) == learning_rates(kind, 3, 10, 10)  # exactly


def test_an_unknown_schedule_is_refused_by_name():
    with pytest.raises(ValueError, match="cosine"):
        make_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), "cosine", 0, 10)
