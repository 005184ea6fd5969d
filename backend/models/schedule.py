"""The diffusion noise schedule of the reference (LDM) model and its DDIM sampler schedule."""

from __future__ import annotations

import torch

NUM_TRAIN_TIMESTEPS = 1000
LINEAR_START = 0.00085
LINEAR_END = 0.012
VAE_SCALE_FACTOR = 0.18215

# The 12 persistent buffers that the reference LatentDiffusionInterface registers (and that its checkpoints hold).
SCHEDULE_BUFFER_NAMES: tuple[str, ...] = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


def schedule_buffers(
    num_timesteps: int = NUM_TRAIN_TIMESTEPS, linear_start: float = LINEAR_START, linear_end: float = LINEAR_END
) -> dict[str, torch.Tensor]:
    """The reference schedule buffers (computed in float64, stored as float32 like the reference).

    LDM's "linear" schedule is linspace(sqrt(start), sqrt(end))**2 (diffusers' "scaled_linear").
    """
    betas = torch.linspace(linear_start**0.5, linear_end**0.5, num_timesteps, dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    buffers = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1.0).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod),
    }
    return {name: buffers[name].float() for name in SCHEDULE_BUFFER_NAMES}


def make_ddim_scheduler():
    """diffusers' DDIMScheduler configured as the reference's sampler.

    With 50 steps it gives t = 981, 961, ..., 1 and uses alphas_cumprod[0] (not 1) after the last step, exactly as
    LDM's DDIMSampler with 'uniform' spacing does; eta is given per call of ``step``.
    """
    from backend.compat import ensure_torchvision_ops

    ensure_torchvision_ops()
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        beta_start=LINEAR_START,
        beta_end=LINEAR_END,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
