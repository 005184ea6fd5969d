"""Exponential moving average of the trained weights (not to be confused with the Explicit Multi-view Attention
of stage 2): shadow = decay * shadow + (1 - decay) * weight after every optimizer step, kept in float32."""

from __future__ import annotations

import contextlib

import torch


class WeightAverage:
    def __init__(self, module: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError("the EMA decay must be between 0 and 1 (e.g. 0.9999)")
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for name, parameter in module.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(parameter.detach().float(), 1.0 - self.decay)

    @contextlib.contextmanager
    def swapped_into(self, module: torch.nn.Module):
        """Temporarily puts the averaged weights into ``module`` (to save or evaluate them)."""
        saved = {}
        parameters = dict(module.named_parameters())
        with torch.no_grad():
            for name, value in self.shadow.items():
                saved[name] = parameters[name].detach().clone()
                parameters[name].copy_(value)
        try:
            yield module
        finally:
            with torch.no_grad():
                for name, value in saved.items():
                    parameters[name].copy_(value)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        if set(state["shadow"]) != set(self.shadow):
            raise ValueError("the saved weight average does not match the model's trainable weights")
        self.decay = state["decay"]
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
