"""Multi-view DDIM preview: four consistent views of the object in an image, straight from the diffusion model.

As the reference's ``2dgen.py``/``i2i.py``: latents N(0, 1) [V, 4, 32, 32], DDIM 50 steps with eta 1, classifier-free
guidance 10 with the rows ordered [uncond; cond] (uncond = zero context), cameras at one elevation and evenly
spaced azimuths, VAE decode. Optionally Explicit Multi-view Attention at inference: the clean latent of the input
image joins each object as an extra frame (t = 0, camera of elevation 0 / azimuth 0) and its prediction is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from backend.device_copies import to_device
from backend.diffusion.cameras import CAMERA_ENCODINGS, camera_to_world, encode_cameras, orbit_azimuths
from backend.diffusion.classifier_free import guide, unconditional_and_conditional
from backend.events import Event, Progress, Views
from backend.imaging import tensor_to_uint8
from backend.models.schedule import make_ddim_scheduler
from backend.models.vae import decode_latents, encode_latents
from backend.settings import check_bounds, setting


@dataclass
class PreviewSettings:
    """The settings of a preview job (wire keys = field names). Angles in degrees. ``camera_encoding=None`` uses the
    model's own (``isotropic3d`` for Isotropic3D weights)."""

    num_views: int = setting(4, min=1, max=16, help="number of views")
    steps: int = setting(50, min=1, max=999, help="DDIM steps")  # 1000 would reach t = 1000 (the offset is 1)
    guidance_scale: float = setting(10.0, min=0.0, max=100.0, help="classifier-free guidance scale")
    eta: float = setting(1.0, min=0.0, max=1.0, help="DDIM eta, 0 = deterministic (1 as the reference)")
    seed: int = setting(22, min=0, max=2**31 - 1, help="random seed (22: the reference's 2dgen.py, and run.seed)")
    elevation: float = setting(15.0, min=-90.0, max=90.0, help="camera elevation in degrees")
    azimuth_start: float = setting(0.0, min=-360.0, max=360.0, help="azimuth of the first view in degrees")
    camera_encoding: str | None = setting(None, choices=CAMERA_ENCODINGS,
                                          help="camera code the model is conditioned with (none: the model's own)")
    reference_frame: bool = setting(False, help="Explicit Multi-view Attention: the input image joins as a frame")

    def validate(self) -> None:
        """SettingsError naming the setting whose value is out of its bounds."""
        check_bounds(self)


@dataclass
class PreviewResult:
    images: np.ndarray  # uint8 [V, H, W, 3]
    elevations: list[float]  # degrees
    azimuths: list[float]  # degrees
    camera_codes: torch.Tensor  # [V, 16], what the model was conditioned on
    c2w: np.ndarray  # float32 [V, 4, 4], true geometry at unit distance (Blender Z-up)


def _latent_shape(model, num_rows: int) -> tuple[int, int, int, int]:
    size = model.unet.config.sample_size
    return (num_rows, model.unet.config.in_channels, size, size)


class _StepFence:
    """Bounds how far the host runs ahead of the GPU in the denoising loop: one step. ``step_queued()`` after a
    step's work is queued waits until the step before it has finished on the device, so the GPU always has a
    step queued while the host does a step's bookkeeping (the caller's progress event, a service's messages),
    and a progress event for step k comes at most one step's GPU time before step k is done. Made once the work
    before the first step is queued (the image encoder, the copies): the first ``step_queued()`` waits for that
    work. Nothing on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.previous = self._recorded() if self.cuda else None  # the event after the last work queued

    @staticmethod
    def _recorded():
        event = torch.cuda.Event()
        event.record()
        return event

    def step_queued(self) -> None:
        if not self.cuda:
            return
        event = self._recorded()
        self.previous.synchronize()  # the one wait a step; not a stream sync (sync debug mode does not count it)
        self.previous = event


@torch.no_grad()
def run_preview(model, image: torch.Tensor, settings: PreviewSettings | None = None) -> Iterator[Event]:
    """Yield ``Progress`` after every denoising step, then one ``Views`` event with the decoded views.

    ``image`` is [1, 3, 256, 256] in [-1, 1] on a white background (see backend.imaging.prepare_preview_image).
    Stopping the iteration cancels the job.
    """
    settings = settings or PreviewSettings()
    settings.validate()
    started = time.perf_counter()
    device, dtype = model.device, model.dtype
    views = settings.num_views
    encoding = settings.camera_encoding or model.camera_encoding
    elevations = [float(settings.elevation)] * views
    azimuths = orbit_azimuths(views, settings.azimuth_start)
    codes = encode_cameras(elevations, azimuths, encoding)

    generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    image = to_device(image, device)
    cond = model.encode_image(image)  # [1, 1, D]
    frames = views + 1 if settings.reference_frame else views

    # Rows: [uncond object (frames rows); cond object (frames rows)], object-major.
    context = unconditional_and_conditional(cond.expand(frames, -1, -1))
    frame_codes = codes
    if settings.reference_frame:
        frame_codes = torch.cat([codes, encode_cameras(0.0, 0.0, encoding)])
        reference_generator = torch.Generator(device=device).manual_seed(settings.seed)
        reference_latent = encode_latents(model.vae, image, generator=reference_generator).float()
        # The unconditional branch sees a zero reference latent, as ImageDream's negative does.
        reference_rows = torch.cat([torch.zeros_like(reference_latent), reference_latent])
    camera = to_device(torch.cat([frame_codes, frame_codes]).to(dtype), device)

    scheduler = make_ddim_scheduler()
    scheduler.set_timesteps(settings.steps)  # on the host: each t is a Python int, never read back from the GPU
    latents = to_device(torch.randn(_latent_shape(model, views), generator=generator), device)
    fence = _StepFence(device)
    for index, t in enumerate(scheduler.timesteps.tolist()):
        noisy = latents.view(1, views, *latents.shape[1:]).expand(2, -1, -1, -1, -1)
        timesteps = torch.full((2, frames), t, device=device, dtype=torch.long)
        if settings.reference_frame:
            noisy = torch.cat([noisy, reference_rows.view(2, 1, *latents.shape[1:])], dim=1)
            timesteps[:, views] = 0
        if device.type == "cuda":  # CUDA graphs only; the call imports Inductor's compiler (~1.5 CPU s) first time
            torch.compiler.cudagraph_mark_step_begin()  # outputs of the last call are consumed: buffers may be reused
        eps = model.unet(
            noisy.reshape(2 * frames, *latents.shape[1:]).to(dtype),
            timesteps.reshape(-1),
            context=context,
            camera=camera,
            num_frames=frames,
        ).float()
        eps = eps.view(2, frames, *latents.shape[1:])[:, :views]
        guided = guide(eps[0], eps[1], settings.guidance_scale)
        # With a host int t the scheduler's alphas are host scalars. Its noise (eta > 0) is drawn here, from the
        # same CPU generator in the same order as its own draw, and copied without waiting for the device.
        noise = None
        if settings.eta > 0:
            noise = to_device(torch.randn(guided.shape, generator=generator, dtype=guided.dtype), device)
        latents = scheduler.step(guided, t, latents, eta=settings.eta, variance_noise=noise).prev_sample
        fence.step_queued()
        elapsed = time.perf_counter() - started
        done = index + 1
        yield Progress(
            phase="denoise",
            step=done,
            total=settings.steps,
            elapsed=elapsed,
            eta=elapsed / done * (settings.steps - done),
        )

    images = tensor_to_uint8(decode_latents(model.vae, latents))
    c2w = camera_to_world(elevations, azimuths).float().numpy()
    yield Views(kind="preview", images=images, elevations=elevations, azimuths=azimuths, c2w=c2w)


def generate_preview(model, image: torch.Tensor, settings: PreviewSettings | None = None) -> PreviewResult:
    """Run the preview to the end and return its views."""
    settings = settings or PreviewSettings()
    views = None
    for event in run_preview(model, image, settings):
        if isinstance(event, Views):
            views = event
    encoding = settings.camera_encoding or model.camera_encoding
    return PreviewResult(
        images=views.images,
        elevations=views.elevations,
        azimuths=views.azimuths,
        camera_codes=encode_cameras(views.elevations, views.azimuths, encoding),
        c2w=views.c2w,
    )
