"""Classifier-free guidance as the reference uses it, in the preview sampler and in SDS alike.

The UNet runs on two halves of rows, ``[unconditional; conditional]`` in that order; the unconditional context is
all zeros (the image embedding dropped, as in training's condition drop). The guided noise prediction is
``eps_u + scale * (eps_c - eps_u)`` (scale 10 in the reference; 1 gives the conditional prediction)."""

from __future__ import annotations

import torch


def unconditional_and_conditional(context: torch.Tensor) -> torch.Tensor:
    """``[zeros; context]`` stacked on the first axis: the context rows of a guided UNet call."""
    return torch.cat([torch.zeros_like(context), context])


def guide(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """The guided noise prediction eps_u + scale (eps_c - eps_u)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)
