"""The weight EMA of fine-tuning (diffusers' EMAModel over the trainable weights): LDM's decay warm-up, swapping the
average in and out, and a restored average continuing exactly."""

import pytest
import torch

from training.weight_ema import WeightAverage


def small_module() -> torch.nn.Module:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    module[0].bias.requires_grad_(False)  # a frozen weight is not averaged
    return module


def train_step(module: torch.nn.Module, k: int) -> None:
    with torch.no_grad():
        for index, parameter in enumerate(module.parameters()):
            if parameter.requires_grad:
                parameter.add_(0.1 * (k + 1) * (index + 1))


def test_the_average_follows_the_decay_warm_up_of_ldm():
    module = small_module()
    average = WeightAverage(module, decay=0.9)
    train_step(module, 0)
    average.update(module)  # step 1: decay 0, the average is the weights
    first = [p.detach().clone() for p in module.parameters()]
    train_step(module, 1)
    average.update(module)  # step 2: decay min(0.9, 2/11)
    decay = 2 / 11
    expected = [decay * b + (1 - decay) * a for b, a in zip(first, [p.detach().clone() for p in module.parameters()])]
    with average.swapped_into(module):
        averaged = [p.detach().clone() for p in module.parameters()]
    trainable = [p.requires_grad for p in module.parameters()]
    for value, want, is_trained in zip(averaged, expected, trainable):
        if is_trained:
            torch.testing.assert_close(value, want, rtol=1e-6, atol=1e-7)  # float32 rounding of the lerp


def test_swapping_restores_the_trained_weights_and_leaves_frozen_ones_alone():
    module = small_module()
    average = WeightAverage(module, decay=0.5)
    for k in range(3):
        train_step(module, k)
        average.update(module)
    trained = [p.detach().clone() for p in module.parameters()]
    with average.swapped_into(module):
        inside = [p.detach().clone() for p in module.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(module.parameters(), trained))
    assert torch.equal(inside[1], trained[1])  # the frozen bias
    assert not torch.equal(inside[0], trained[0])


def test_a_restored_average_continues_exactly():
    module, other = small_module(), small_module()
    average = WeightAverage(module, decay=0.99)
    for k in range(3):
        train_step(module, k)
        average.update(module)
    state = average.state_dict()
    other.load_state_dict(module.state_dict())
    restored = WeightAverage(other, decay=0.99)
    restored.load_state_dict(state)
    for k in range(3, 5):
        train_step(module, k)
        average.update(module)
        train_step(other, k)
        restored.update(other)
    with average.swapped_into(module), restored.swapped_into(other):
        assert all(torch.equal(a, b) for a, b in zip(module.parameters(), other.parameters()))


def test_an_average_of_other_weights_is_refused():
    state = WeightAverage(torch.nn.Linear(3, 4), decay=0.9).state_dict()
    with pytest.raises(ValueError, match="does not match"):
        WeightAverage(torch.nn.Linear(3, 5), decay=0.9).load_state_dict(state)
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightAverage(torch.nn.Linear(3, 4), decay=1.0)
