"""Exponential moving average of the trained weights (not to be confused with the Explicit Multi-view Attention of
stage 2), kept by diffusers' ``EMAModel`` over the UNet's trainable parameters.

After optimizer step k (from 1) the average moves towards the weights with decay min(``decay``, (1 + s) / (10 + s)),
s = k - 1 (0 at the first step: the average starts as a copy of the weights), as LDM's ``LitEma`` does; the
average lives on the weights' device in their dtype (float32: mixed precision keeps float32 weights).
"""

from __future__ import annotations

import contextlib

import torch


def _trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


class WeightAverage:
    def __init__(self, module: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError("the EMA decay must be between 0 and 1 (e.g. 0.9999)")
        from backend.compat import ensure_torchvision_ops

        ensure_torchvision_ops()  # diffusers.training_utils imports its models, which import torchvision
        from diffusers.training_utils import EMAModel

        self.average = EMAModel(_trainable(module), decay=decay)

    @property
    def decay(self) -> float:
        return self.average.decay

    def update(self, module: torch.nn.Module) -> None:
        """One optimizer step's update of the average."""
        self.average.step(_trainable(module))

    @contextlib.contextmanager
    def swapped_into(self, module: torch.nn.Module):
        """Temporarily puts the averaged weights into ``module`` (to save or evaluate them)."""
        parameters = _trainable(module)
        self.average.store(parameters)
        self.average.copy_to(parameters)
        try:
            yield module
        finally:
            self.average.restore(parameters)

    def state_dict(self) -> dict:
        return self.average.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restores a saved average into this one's tensors (on the weights' device), refusing one of other weights."""
        saved = state.get("shadow_params")
        current = self.average.shadow_params
        if not isinstance(saved, list) or [tuple(t.shape) for t in saved] != [tuple(t.shape) for t in current]:
            raise ValueError("the saved weight average does not match the model's trainable weights")
        self.average.load_state_dict({key: value for key, value in state.items() if key != "shadow_params"})
        with torch.no_grad():
            for target, value in zip(current, saved):
                target.copy_(value)
