"""Models of the multi-view diffusion core: UNet, VAE, image encoder, and their reference checkpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: `backend.models.configs` stays light (CLI --help)
    import torch


def load_mv_unet(state_dict: dict[str, torch.Tensor], ldm_config: dict[str, Any]):
    """A multi-view UNet built from the reference ``unet_config.params`` and strictly loaded from a state dict in
    reference key names (without ``model.diffusion_model.``). Call it as
    ``model(x, t, context=..., camera=..., num_frames=...)``."""
    import torch

    from backend.models.checkpoints import load_unet_ldm_state_dict
    from backend.models.mv_unet import MultiViewUNet

    with torch.device("meta"):
        unet = MultiViewUNet.from_ldm_config(ldm_config)
    return load_unet_ldm_state_dict(unet, state_dict).eval()
