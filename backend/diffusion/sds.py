"""Score distillation with the multi-view model (threestudio ``multiview-diffusion-guidance`` as Isotropic3D sets it).

Per step: renders [N, 3, H, W] in [0, 1] (N = objects x views, object-major) are resized bilinearly to
``latent_resolution_input``, VAE-encoded *with* gradient (posterior sample x 0.18215); one timestep t for all views,
drawn from [min_step, max_step], which anneal linearly (980 -> [20, 500] over 80% of the run in the reference); the
UNet runs on [uncond; cond] with a zero unconditional embedding; guided eps = eps_u + s (eps_c - eps_u), s = 10.
The loss is the x0-reconstruction form: x0 from the guided eps, rescaled towards the std of the conditional x0
per object (``recon_std_rescale`` 0.5), loss = 0.5 * sum((z - sg(x0'))^2) / N.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from backend.diffusion.cameras import CAMERA_ENCODINGS, DEFAULT_CAMERA_ENCODING
from backend.diffusion.classifier_free import guide, unconditional_and_conditional
from backend.errors import SettingsError
from backend.profiling import region
from backend.settings import check_bounds, setting

# (images [N, 3, H, W] in [-1, 1], generator) -> latents [N, C, h, w]
LatentEncoder = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


@dataclass
class GuidanceConfig:
    """SDS guidance settings (threestudio ``multiview-diffusion-guidance`` with Isotropic3D's settings); the
    ``guidance`` section of a generation's settings (backend.nerf.presets.GenerateConfig)."""

    guidance_scale: float = setting(10.0, min=0.0, max=100.0, help="classifier-free guidance scale of SDS")
    recon_std_rescale: float = setting(0.5, min=0.0, max=1.0, help="x0 std rescale towards the conditional x0")
    latent_resolution_input: int = setting(256, min=8, max=1024,
                                           help="renders are resized to this (pixels, a multiple of 8) before the VAE")
    min_step_start: float = setting(0.98, min=0.0, max=1.0, help="lowest timestep at the start (fraction of 1000)")
    max_step_start: float = setting(0.98, min=0.0, max=1.0, help="highest timestep at the start (fraction of 1000)")
    min_step_end: float = setting(0.02, min=0.0, max=1.0, help="lowest timestep at the end (fraction of 1000)")
    max_step_end: float = setting(0.50, min=0.0, max=1.0, help="highest timestep at the end (fraction of 1000)")
    anneal_until: float = setting(0.8, min=0.0, max=1.0, help="fraction of steps over which the range anneals")
    camera_encoding: str | None = setting(None, choices=CAMERA_ENCODINGS,
                                          help="camera code of the model (none: the model's own)")

    def validate(self) -> None:
        check_bounds(self)
        if self.latent_resolution_input % 8:
            raise SettingsError("setting 'guidance.latent_resolution_input' must be a multiple of 8")
        if not (0 < self.min_step_end <= self.max_step_end < 1 and 0 < self.min_step_start <= self.max_step_start < 1):
            raise SettingsError("settings 'guidance.min_step_*' and 'guidance.max_step_*' must satisfy "
                                "0 < min <= max < 1")


@dataclass
class SDSOutput:
    """The step's SDS loss; ``timestep`` (0-d long) and ``grad_norm`` (0-d float: |z - x0'| averaged over latents,
    for logging) stay tensors on the renders' device, so that reading them is the caller's one synchronisation of
    the step (the trainer's), not two more in the middle of it."""

    loss: torch.Tensor
    timestep: torch.Tensor
    grad_norm: torch.Tensor


def vae_latent_encoder(vae, moments=None) -> LatentEncoder:
    """The VAE's latent encoder; ``moments``: the model's compiled encoder (``model.vae_encoder_moments``) or None."""
    from backend.models.vae import encode_latents

    return lambda images, generator: encode_latents(vae, images, generator, moments)


def encoder_images(renders: torch.Tensor, size: int) -> torch.Tensor:
    """A step's renders [N, 3, H, W] in [0, 1] as the VAE encoder takes them: resized bilinearly to size^2 (where they
    are not that size; their memory layout kept), in [-1, 1]."""
    images = renders if renders.shape[-1] == size else F.interpolate(
        renders, (size, size), mode="bilinear", align_corners=False)
    return images * 2.0 - 1.0


def guided_noise(unet, latents_noisy: torch.Tensor, t: torch.Tensor, context: torch.Tensor, cameras: torch.Tensor,
                 views_per_object: int, guidance_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(guided eps, conditional eps) for one batch; the UNet sees [uncond (zero context); cond] stacked."""
    batch = torch.cat([latents_noisy, latents_noisy])
    contexts = unconditional_and_conditional(context)
    camera = torch.cat([cameras, cameras]) if cameras is not None else None
    eps = unet(batch, torch.cat([t, t]), context=contexts, camera=camera, num_frames=views_per_object)
    eps_uncond, eps_cond = eps.chunk(2)
    return guide(eps_uncond, eps_cond, guidance_scale), eps_cond


def x0_reconstruction_target(latents_noisy, eps_guided, eps_cond, alpha_cumprod: torch.Tensor,
                             views_per_object: int, std_rescale: float) -> torch.Tensor:
    """x0' = s f x0_cfg + (1 - s) x0_cfg, f = std(x0_cond) / std(x0_cfg) per object (s = ``std_rescale``)."""
    sqrt_a = alpha_cumprod.sqrt()
    sqrt_1ma = (1.0 - alpha_cumprod).sqrt()
    x0 = (latents_noisy - sqrt_1ma * eps_guided) / sqrt_a
    if std_rescale <= 0:
        return x0
    x0_cond = (latents_noisy - sqrt_1ma * eps_cond) / sqrt_a
    grouped = lambda v: v.reshape(-1, views_per_object, *v.shape[1:])  # noqa: E731
    factor = (grouped(x0_cond).std(dim=(1, 2, 3, 4), keepdim=True) + 1e-8) / (
        grouped(x0).std(dim=(1, 2, 3, 4), keepdim=True) + 1e-8
    )
    adjusted = (grouped(x0) * factor).reshape(x0.shape)
    return std_rescale * adjusted + (1.0 - std_rescale) * x0


class SDSGuidance:
    """The SDS loss of renders given an image's context; ``update_step`` anneals the timestep range."""

    def __init__(self, unet, alphas_cumprod: torch.Tensor, encode: LatentEncoder, config: GuidanceConfig,
                 total_steps: int, camera_encoding: str = DEFAULT_CAMERA_ENCODING):
        self.unet = unet
        self.encode = encode
        self.config = config
        self.total_steps = total_steps
        self.camera_encoding = config.camera_encoding or camera_encoding
        self.alphas_cumprod = alphas_cumprod.float()
        self.num_train_timesteps = alphas_cumprod.shape[0]
        self.min_step = self.max_step = 0
        self.update_step(0)

    @property
    def weights_dtype(self) -> torch.dtype:
        """The UNet weights' dtype (float32 for a UNet that is not a module, e.g. a test function)."""
        weight = next(self.unet.parameters(), None) if isinstance(self.unet, torch.nn.Module) else None
        return weight.dtype if weight is not None else torch.float32

    def update_step(self, step: int) -> None:
        c = self.config
        span = max(c.anneal_until * self.total_steps, 1e-8)
        fraction = min(max(step / span, 0.0), 1.0)
        lerp = lambda start, end: start + (end - start) * fraction  # noqa: E731
        self.min_step = int(self.num_train_timesteps * lerp(c.min_step_start, c.min_step_end))
        self.max_step = int(self.num_train_timesteps * lerp(c.max_step_start, c.max_step_end))

    def __call__(self, renders: torch.Tensor, context: torch.Tensor, cameras: torch.Tensor, views_per_object: int,
                 generator: torch.Generator | None = None) -> SDSOutput:
        """renders [N, 3, H, W] in [0, 1]; context [1 or objects or N, T, D];
        cameras [N, 16] camera codes."""
        c = self.config
        n = renders.shape[0]
        device = renders.device
        if context.shape[0] == 1:
            context = context.expand(n, -1, -1)
        elif context.shape[0] == n // views_per_object:
            context = context.repeat_interleave(views_per_object, dim=0)
        elif context.shape[0] != n:
            raise ValueError(f"context has {context.shape[0]} rows for {n} renders")
        size = c.latent_resolution_input
        with region("guidance.encode"):
            latents = self.encode(encoder_images(renders, size), generator).float()
        # t stays on the device (no host synchronisation before the UNet): one timestep for all views
        drawn = torch.randint(self.min_step, self.max_step + 1, (1,), generator=generator, device=device)
        t_value, t = drawn[0], drawn.expand(n)
        if self.alphas_cumprod.device != device:  # moved once, not copied every step
            self.alphas_cumprod = self.alphas_cumprod.to(device)
        alpha = self.alphas_cumprod.index_select(0, drawn)[0]  # a gather (a 0-d tensor index would be read back)
        with torch.no_grad(), region("guidance.unet"):
            noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
            noisy = alpha.sqrt() * latents + (1.0 - alpha).sqrt() * noise
            dtype = self.weights_dtype
            eps_guided, eps_cond = guided_noise(self.unet, noisy.to(dtype), t, context.to(dtype), cameras.to(device),
                                                views_per_object, c.guidance_scale)
            target = x0_reconstruction_target(noisy, eps_guided.float(), eps_cond.float(), alpha, views_per_object,
                                              c.recon_std_rescale)
        loss = 0.5 * F.mse_loss(latents, target, reduction="sum") / n
        return SDSOutput(loss, t_value, (latents.detach() - target).abs().mean())
