"""The VAE encoder an SDS step runs (its posterior moments of the step's renders).

The model's compiled encoder where it has one (replayed from CUDA graphs where the model's is graphed:
backend.models.graphed_encoder), else the eager one; under the memory plan's checkpointing (backend.nerf.memory) the
eager encoder in chunks of ``checkpoint_views`` views.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from backend.models.graphed_encoder import GraphedEncoder


class StepEncoder:
    """images [N, 3, H, W] in [-1, 1] -> posterior moments, as this step's phase plans it."""

    def __init__(self, model, before_capture: Callable[[], None] | None = None):
        self.model = model
        self.before_capture = before_capture  # called before CUDA graphs are captured (they need the GPU alone)
        self.checkpoint_views: int | None = None  # set each step from the memory plan's phase (None: plain)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # here, not at import: backend.models.vae imports diffusers (seconds), which what imports the trainer for
        # its file names (finishing, the service's resume) should not pay
        from backend.models.vae import checkpointed_moments, encoder_moments

        if self.checkpoint_views:
            # Chunks run the eager encoder: the compiled one is traced for whole-batch shapes (dynamic=False), so
            # each chunk size would compile again, and a channels-last batch of one failed its layout check.
            return checkpointed_moments(partial(encoder_moments, self.model.vae), self.checkpoint_views)(images)
        moments = getattr(self.model, "vae_encoder_moments", None) or partial(encoder_moments, self.model.vae)
        if isinstance(moments, GraphedEncoder):
            moments.before_capture = self.before_capture
        return moments(images)

    def release(self) -> None:
        """Give back the memory of the encoder's CUDA graphs (a run's end)."""
        moments = getattr(self.model, "vae_encoder_moments", None)
        if isinstance(moments, GraphedEncoder):
            moments.release()
