"""The latent autoencoder: diffusers' AutoencoderKL built from the reference ``first_stage_config``."""

from __future__ import annotations

from typing import Any

import torch

from backend.compat import ensure_torchvision_ops

ensure_torchvision_ops()
from diffusers import AutoencoderKL  # noqa: E402

from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution  # noqa: E402

from backend.models.schedule import VAE_SCALE_FACTOR  # noqa: E402


def diffusers_config_from_ldm(vae_config: dict[str, Any]) -> dict[str, Any]:
    dd = vae_config["ddconfig"]
    if not dd.get("double_z", True):
        raise ValueError("unsupported VAE config: double_z must be true")
    if dd.get("attn_resolutions"):
        raise ValueError("unsupported VAE config: attention outside the mid block (attn_resolutions must be [])")
    if vae_config["embed_dim"] != dd["z_channels"]:
        raise ValueError("unsupported VAE config: embed_dim must equal z_channels")
    levels = len(dd["ch_mult"])
    return {
        "in_channels": dd["in_channels"],
        "out_channels": dd["out_ch"],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": [dd["ch"] * m for m in dd["ch_mult"]],
        "layers_per_block": dd["num_res_blocks"],
        "latent_channels": dd["z_channels"],
        "norm_num_groups": 32,
        "sample_size": dd["resolution"],
        "scaling_factor": VAE_SCALE_FACTOR,
        "act_fn": "silu",
    }


def build_vae(vae_config: dict[str, Any]) -> AutoencoderKL:
    return AutoencoderKL(**diffusers_config_from_ldm(vae_config))


def encoder_moments(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """The posterior's moments [N, 2 * latent channels, H/8, W/8] (mean; log-variance) of images [N, 3, H, W] in
    [-1, 1] in the VAE's dtype: what ``vae.encode`` computes before its Gaussian (no tiling or slicing)."""
    moments = vae.encoder(images)
    return vae.quant_conv(moments) if vae.quant_conv is not None else moments


def encode_latents(vae: AutoencoderKL, images: torch.Tensor, generator: torch.Generator | None = None,
                   moments=None) -> torch.Tensor:
    """Images [N, 3, H, W] in [-1, 1] -> scaled latents [N, 4, H/8, W/8].

    Takes a sample of the posterior (not its mean), as the reference's ``encode_first_stage`` does. ``moments``:
    a function images -> ``encoder_moments(vae, images)`` (the compiled one of
    backend.models.acceleration.compile_vae_encoder); None: the VAE's own ``encode``."""
    images = images.to(vae.dtype)
    if moments is None:
        posterior = vae.encode(images).latent_dist
    else:
        posterior = DiagonalGaussianDistribution(moments(images))
    return posterior.sample(generator=generator) * vae.config.scaling_factor


def checkpointed_moments(moments, views_per_chunk: int):
    """``moments`` (images -> posterior moments, e.g. ``partial(encoder_moments, vae)`` or the compiled one) run
    under activation checkpointing, ``views_per_chunk`` images at a time (backend.nerf.memory decides when).

    The encoder treats each image on its own (its GroupNorms normalise per image), so chunks give the same moments;
    the backward keeps only the chunks' inputs and outputs and recomputes one chunk's activations at a time (one
    more encoder forward a step): exact gradients, with a fraction of the memory. Without gradients it is
    ``moments`` itself."""
    from torch.utils.checkpoint import checkpoint

    size = max(int(views_per_chunk), 1)

    def run(images: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return moments(images)
        return torch.cat([checkpoint(moments, images[start:start + size], use_reentrant=False)
                          for start in range(0, images.shape[0], size)])

    return run


def decode_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images [N, 3, H, W] in [-1, 1] (not clamped)."""
    return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
