"""The fine-tuning objective: UNet inputs of stage 1 and stage 2 and the epsilon MSE loss on target frames.

Stage 1: each object's F target latents are noised at one timestep t (shared by its views) and denoised
conditioned on the CLIP embedding of the input view (zeros when dropped) and the targets' camera codes.

Stage 2 (Explicit Multi-view Attention, EMA): the clean latent of the input view joins every object as one more
frame, the last of its group (as ImageDream's "pixel" mode places it), with timestep 0 and the camera code of
elevation 0 / azimuth 0. It takes part in the multi-view self-attention; its own prediction is discarded and the
loss covers the target frames only. When a sample's conditioning is dropped, its reference latent is zeroed too
(ImageDream's negative is a zero latent), so the unconditional model sees neither.

Rows are object-major: object b's frames are rows b*F' .. b*F'+F'-1 (F' = F, or F+1 with the reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from backend.diffusion.cameras import encode_cameras


@dataclass
class UNetInputs:
    """One UNet call: ``x`` [N, C, h, w], ``timesteps`` [N], ``context`` [N, 1, D], ``camera`` [N, 16],
    ``num_frames`` per object (the first ``num_targets`` of them are targets), ``is_target`` [N] bool, and the noise
    ``epsilon`` [N_targets, C, h, w] that the target rows must predict."""

    x: torch.Tensor
    timesteps: torch.Tensor
    context: torch.Tensor
    camera: torch.Tensor
    num_frames: int
    num_targets: int
    is_target: torch.Tensor
    epsilon: torch.Tensor


def reference_camera(encoding: str) -> torch.Tensor:
    """The reference frame's camera code [16]: elevation 0, azimuth 0."""
    return encode_cameras([0.0], [0.0], encoding)[0]


def build_unet_inputs(
    clean_latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    context: torch.Tensor,
    cameras: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    reference_latents: torch.Tensor | None = None,
    reference_camera_code: torch.Tensor | None = None,
) -> UNetInputs:
    """Noised targets (q_sample) plus, for stage 2, the clean reference frame.

    clean_latents, noise [B, F, C, h, w]; timesteps [B] (integers in [0, 1000)); context [B, 1, D];
    cameras [B, F, 16]; alphas_cumprod [1000]; reference_latents [B, C, h, w] or None (stage 1).
    """
    batch, frames = clean_latents.shape[:2]
    targets = frames
    alpha = alphas_cumprod.to(clean_latents.device, torch.float32)[timesteps].view(batch, 1, 1, 1, 1)
    noisy = alpha.sqrt() * clean_latents + (1.0 - alpha).sqrt() * noise
    frame_timesteps = timesteps.view(batch, 1).expand(batch, frames)
    is_target = torch.ones(batch, frames, dtype=torch.bool, device=clean_latents.device)
    if reference_latents is not None:
        if reference_camera_code is None:
            raise ValueError("a reference frame needs its camera code")
        noisy = torch.cat([noisy, reference_latents[:, None]], dim=1)
        frame_timesteps = torch.cat([frame_timesteps, torch.zeros_like(frame_timesteps[:, :1])], dim=1)
        code = reference_camera_code.to(cameras).view(1, 1, -1).expand(batch, 1, -1)
        cameras = torch.cat([cameras, code], dim=1)
        is_target = torch.cat([is_target, torch.zeros_like(is_target[:, :1])], dim=1)
        frames += 1
    rows = batch * frames
    return UNetInputs(
        x=noisy.reshape(rows, *noisy.shape[2:]),
        timesteps=frame_timesteps.reshape(rows),
        context=context.repeat_interleave(frames, dim=0),
        camera=cameras.reshape(rows, -1),
        num_frames=frames,
        num_targets=targets,
        is_target=is_target.reshape(rows),
        epsilon=noise.reshape(-1, *noise.shape[2:]),
    )


def epsilon_loss(prediction: torch.Tensor, inputs: UNetInputs) -> torch.Tensor:
    """Mean squared error of the target rows' noise prediction (float32); other rows do not enter.

    The targets are taken by slicing each object's frames (not by a boolean mask, whose backward accumulates
    with a non-deterministic scatter on CPU)."""
    frames = prediction.view(-1, inputs.num_frames, *prediction.shape[1:])
    targets = frames[:, : inputs.num_targets].reshape(inputs.epsilon.shape)
    return F.mse_loss(targets.float(), inputs.epsilon.float())
