"""The trajectory benchmark's floor (bench/generate.py): the guidance UNet and the VAE encoder of a phase-1 and of a
phase-2 step, timed alone in the same process as the runs (milliseconds), and what they add up to over a run's
steps (seconds)."""

from __future__ import annotations

import statistics
import time

import torch

from backend.models.graphed_encoder import GraphedEncoder
from backend.nerf.presets import GenerateConfig
from bench.trajectory import phase_1_steps, synchronize


def median_ms(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` calls after ``warmup`` ones, the device synchronised after
    each (wall clock: host work and launches count)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(times)


def encoder_forward_backward(model, images: torch.Tensor, moments, compute_dtype: torch.dtype,
                             autocast: bool) -> torch.Tensor:
    """The SDS step's VAE encoder on ``images`` [N, 3, H, W] in [-1, 1], forward and backward (the input's gradient
    only, as the step's), under the run's autocast; ``moments``: the encoder (None: the eager one). Returns the
    images' gradient."""
    from backend.models.vae import encode_latents

    source = images.clone().requires_grad_(True)
    with torch.autocast(images.device.type, compute_dtype, enabled=autocast):
        latents = encode_latents(model.vae, source, moments=moments)
    latents.float().square().sum().backward()
    return source.grad


def step_images(views: int, resolution: int, size: int, device: torch.device) -> torch.Tensor:
    """Images [views, 3, size, size] in [-1, 1] laid out as a step's guidance hands them to the VAE encoder: renders
    [N, H, W, 3] seen as [N, 3, H, W] (channels-last strides), resized to ``size`` where they are not that size. A
    compiled encoder guards on its input's strides: contiguous images compiled and timed another graph (and with
    the floor's other calls took the encoder past Dynamo's recompile limit, after which it ran eager)."""
    from backend.diffusion.sds import encoder_images

    return encoder_images(torch.rand(views, resolution, resolution, 3, device=device).permute(0, 3, 1, 2), size)


def guidance_ms(model, device: torch.device, config: GenerateConfig, views: int, repeats: int, warmup: int,
                moments=None, resolution: int | None = None) -> tuple[float, float]:
    """(UNet ms, VAE ms) of one SDS step's guidance for ``views`` views rendered at ``resolution`` (default:
    ``latent_resolution_input``): one guidance UNet call ([uncond; cond] x views) at the latent size, and the VAE
    encoder forward and backward of the views at ``latent_resolution_input`` (``moments``: the encoder to time, None
    for the eager one; the model as the run uses it)."""
    from backend.diffusion.precision import guidance_autocast_dtype
    from backend.diffusion.sds import guided_noise
    from backend.models.vae import encode_latents

    size = config.guidance.latent_resolution_input
    latent = size // 8
    dtype = next(model.unet.parameters()).dtype if isinstance(model.unet, torch.nn.Module) else torch.float32
    images = step_images(views, resolution or size, size, device)
    autocast = device.type == "cuda" and config.run.mixed_precision
    compute_dtype = guidance_autocast_dtype(dtype)  # the trainer's choice (backend.diffusion.precision)
    # The UNet's inputs as SDSGuidance gives them: a compiled UNet guards on their dtypes and strides, and a floor
    # call that differs compiles and records the UNet anew (a float16 camera code here, float32 in the run: a
    # minute on an H200) and times another graph. Noisy latents in the encoder's output layout (channels-last where
    # it is) and the weights' dtype, the context in the weights' dtype, one timestep for all views, camera codes
    # float32; guided_noise stacks [uncond; cond] as the run's step does. The latents come from the encoder as a
    # step calls it (gradient on, the images requiring it): a call without gradient would compile another variant.
    with torch.autocast(device.type, compute_dtype, enabled=autocast):
        noisy = encode_latents(model.vae, images.clone().requires_grad_(True), moments=moments)
    noisy = noisy.detach().float().to(dtype)
    assert noisy.shape[-1] == latent
    context = torch.randn(views, 1, model.unet_context_dim, device=device, dtype=dtype)
    t = torch.full((1,), 500, device=device).expand(views)
    codes = torch.randn(views, 16, device=device, dtype=torch.float32)

    def unet():
        with torch.no_grad(), torch.autocast(device.type, compute_dtype, enabled=autocast):
            guided_noise(model.unet, noisy, t, context, codes, config.cameras.views_per_object,
                         config.guidance.guidance_scale)

    def vae():
        encoder_forward_backward(model, images, moments, compute_dtype, autocast)

    return median_ms(unet, device, warmup, repeats), median_ms(vae, device, warmup, repeats)


def floor_ms(model, device: torch.device, config: GenerateConfig, repeats: int, warmup: int) -> dict[str, float]:
    """The phase-2 step's floor (``floor_ms``: its guidance for the views of ``phases.objects_after`` objects), and
    phase 1's (``floor_phase1_ms``: ``phases.objects_before`` objects), the model's encoder as the run has it;
    besides, the phase-2 VAE part without the encoder's CUDA graphs and eager (what the graphs and the compile gain).
    """
    compiled_moments = getattr(model, "vae_encoder_moments", None)
    views_per_object = config.cameras.views_per_object

    def phase_ms(objects: int, moments, resolution: int) -> tuple[float, float]:
        return guidance_ms(model, device, config, views_per_object * objects, repeats, warmup, moments, resolution)

    phase1_unet_ms, phase1_vae_ms = phase_ms(config.phases.objects_before, compiled_moments,
                                             config.phases.resolution_before)
    unet_ms, vae_ms = phase_ms(config.phases.objects_after, compiled_moments, config.phases.resolution_after)
    graphed = isinstance(compiled_moments, GraphedEncoder)
    if graphed:
        compiled_moments.release()  # the runs record their own graphs
    floor = {"floor_unet_ms": round(unet_ms, 2), "floor_vae_ms": round(vae_ms, 2), "floor_ms": round(unet_ms + vae_ms, 2),
             "floor_phase1_unet_ms": round(phase1_unet_ms, 2), "floor_phase1_vae_ms": round(phase1_vae_ms, 2),
             "floor_phase1_ms": round(phase1_unet_ms + phase1_vae_ms, 2),
             "vae_encoder_compiled": compiled_moments is not None, "vae_encoder_graphed": graphed}
    if graphed:  # what the graphs gain: the compiled encoder's forward and backward launched call by call
        floor["floor_vae_ungraphed_ms"] = round(phase_ms(config.phases.objects_after, compiled_moments.moments,
                                                         config.phases.resolution_after)[1], 2)
    if compiled_moments is not None:  # what the compile gains: the same forward and backward, eager
        floor["floor_vae_eager_ms"] = round(phase_ms(config.phases.objects_after, None,
                                                     config.phases.resolution_after)[1], 2)
    return floor


def floor_of_run_s(floor: dict[str, float], config: GenerateConfig) -> float:
    """Seconds the floor alone takes over ``config``'s steps: phase 1's floor a step before the switch, phase 2's
    after it (the least any run of those steps can take on this GPU, with nothing else done)."""
    steps, switch = config.run.steps, phase_1_steps(config)
    return round((switch * floor["floor_phase1_ms"] + (steps - switch) * floor["floor_ms"]) / 1e3, 2)
