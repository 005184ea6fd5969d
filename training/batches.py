"""A collated batch of samples (training.data) -> the UNet inputs of a stage, through the frozen VAE and image
encoder (or their cached outputs)."""

from __future__ import annotations

import torch

from training.data import latent_moments, sample_latents
from training.objective import UNetInputs, build_unet_inputs


@torch.no_grad()
def encode_batch(model, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Posterior moments of targets [B, F, 2C, h, w] and input [B, 2C, h, w], input CLIP embedding [B, D] (of the
    input view's ``condition`` image): taken from the batch when cached, else computed with the model's VAE and
    image encoder."""
    targets = batch["targets"].to(device, non_blocking=True)
    inputs = batch["input"].to(device, non_blocking=True)
    if "input_embedding" in batch:
        return {
            "target_moments": targets.float(),
            "input_moments": inputs.float(),
            "input_embedding": batch["input_embedding"].to(device, non_blocking=True).float(),
        }
    batch_size, frames = targets.shape[:2]
    target_moments = latent_moments(model.vae, targets.flatten(0, 1))
    return {
        "target_moments": target_moments.view(batch_size, frames, *target_moments.shape[1:]),
        "input_moments": latent_moments(model.vae, inputs),
        "input_embedding": model.encode_image(batch["condition"].to(device, non_blocking=True))[:, 0].float(),
    }


def unet_inputs_from_batch(
    model,
    batch: dict[str, torch.Tensor],
    stage: int,
    device: torch.device,
    reference_camera_code: torch.Tensor | None = None,
) -> UNetInputs:
    """The UNet inputs of ``stage`` (1 or 2) for one collated batch; conditioning and, in stage 2, the reference
    latent are zeroed for samples whose ``drop_condition`` is set."""
    encoded = encode_batch(model, batch, device)
    scale = model.vae.config.scaling_factor
    posterior_noise = batch["posterior_noise"].to(device, non_blocking=True)
    frames = encoded["target_moments"].shape[1]
    keep = (~batch["drop_condition"].to(device)).float()
    clean = sample_latents(encoded["target_moments"], posterior_noise[:, :frames], scale)
    context = (encoded["input_embedding"] * keep[:, None])[:, None]
    reference = None
    if stage == 2:
        reference = sample_latents(encoded["input_moments"], posterior_noise[:, frames], scale) * keep.view(-1, 1, 1, 1)
    return build_unet_inputs(
        clean_latents=clean,
        noise=batch["noise"].to(device, non_blocking=True),
        timesteps=batch["timestep"].to(device),
        context=context,
        cameras=batch["cameras"].to(device, non_blocking=True),
        alphas_cumprod=model.alphas_cumprod,
        reference_latents=reference,
        reference_camera_code=reference_camera_code,
    )
