"""The preview's denoising loop without a host synchronisation a step: timesteps as host ints, the scheduler's noise
drawn by the loop from the same CPU generator. Its latents equal, bit for bit, those of diffusers' scheduler stepping
on device timesteps and drawing its own noise (the loop before 2026-12-03); on CUDA (marked ``gpu``) the loop's steps
never synchronise the stream, and the host runs at most one step ahead of the GPU."""

from __future__ import annotations

import pytest
import torch

from backend.diffusion import preview as preview_module
from backend.diffusion.cameras import encode_cameras, orbit_azimuths
from backend.diffusion.classifier_free import guide, unconditional_and_conditional
from backend.diffusion.preview import PreviewSettings, run_preview
from backend.events import Progress, Views
from backend.models.schedule import make_ddim_scheduler
from backend.models.vae import decode_latents

CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                          reason="needs a CUDA device")])


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(7)) * 2 - 1


@pytest.fixture
def model_on(tiny_model):
    """The tiny model on a device (a copy on CUDA: the session's model stays on the CPU)."""
    import copy

    def on(device: str):
        return tiny_model if device == "cpu" else copy.deepcopy(tiny_model).to(device)

    return on


def latents_decoded(model, image, settings, monkeypatch) -> torch.Tensor:
    """The latents that the preview hands to the VAE decode (the real decode, recorded: the views are its function
    of these)."""
    decoded = []

    def record(vae, latents):
        decoded.append(latents.clone())
        return decode_latents(vae, latents)

    monkeypatch.setattr(preview_module, "decode_latents", record)
    events = list(run_preview(model, image, settings))
    assert [e.step for e in events if isinstance(e, Progress)] == list(range(1, settings.steps + 1))
    assert isinstance(events[-1], Views)
    (latents,) = decoded
    return latents


@torch.no_grad()
def latents_of_diffusers_own_steps(model, image, settings: PreviewSettings) -> torch.Tensor:
    """The preview's sampling as it was before 2026-12-03: timesteps on the device, read back each step, and
    diffusers' DDIMScheduler drawing the step's noise itself from the CPU generator."""
    device, views = model.device, settings.num_views
    generator = torch.Generator().manual_seed(settings.seed)
    context = unconditional_and_conditional(model.encode_image(image.to(device)).expand(views, -1, -1))
    codes = encode_cameras([settings.elevation] * views, orbit_azimuths(views, settings.azimuth_start),
                           settings.camera_encoding or model.camera_encoding)
    camera = torch.cat([codes, codes]).to(device=device, dtype=model.dtype)
    scheduler = make_ddim_scheduler()
    scheduler.set_timesteps(settings.steps, device=device)
    size = model.unet.config.sample_size
    latents = torch.randn((views, model.unet.config.in_channels, size, size), generator=generator).to(device)
    for t in scheduler.timesteps:
        eps = model.unet(torch.cat([latents, latents]).to(model.dtype), torch.full((2 * views,), int(t), device=device),
                         context=context, camera=camera, num_frames=views).float()
        guided = guide(eps[:views], eps[views:], settings.guidance_scale)
        latents = scheduler.step(guided, t, latents, eta=settings.eta, generator=generator).prev_sample
    return latents


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("eta", [1.0, 0.0])  # the reference's; none (no noise drawn at all)
def test_latents_equal_diffusers_drawing_its_own_noise(model_on, image, monkeypatch, device, eta):
    model = model_on(device)
    # 3 steps: two draws after the initial noise; one view: one 256^2 decode (~0.3 CPU s) a run
    settings = PreviewSettings(steps=3, seed=5, eta=eta, num_views=1)
    ours = latents_decoded(model, image, settings, monkeypatch)
    assert torch.equal(ours, latents_of_diffusers_own_steps(model, image, settings))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_denoising_steps_never_synchronise_the_stream(model_on, image, monkeypatch):
    """From the first step's progress to the last one, the loop (UNet call, guidance, DDIM update with its noise,
    the step fence's wait on the previous step's event) makes no call that synchronises the host with the stream:
    ``set_sync_debug_mode('error')`` raises on any (an event's wait is not one)."""
    model = model_on("cuda")
    settings = PreviewSettings(steps=4, seed=5, num_views=2)
    steps = []
    try:
        for event in run_preview(model, image, settings):
            if isinstance(event, Progress):
                steps.append(event.step)
                # the decode's read-back after the last step synchronises, as it must
                torch.cuda.set_sync_debug_mode("error" if event.step < settings.steps else "default")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert steps == [1, 2, 3, 4]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_host_runs_at_most_one_step_ahead():
    def queued_and_marked(cycles=200_000_000):  # ~0.1 s of GPU time: far longer than the host's calls between checks
        torch.cuda._sleep(cycles)
        event = torch.cuda.Event()
        event.record()
        return event

    before = queued_and_marked()  # the work before the first step (the image encoder)
    fence = preview_module._StepFence(torch.device("cuda"))
    first = queued_and_marked()
    fence.step_queued()
    assert before.query() and not first.query()  # waited for the work before step 1, not for step 1
    second = queued_and_marked()
    fence.step_queued()
    assert first.query() and not second.query()  # waited for step 1, not for step 2: the GPU keeps a step queued
    torch.cuda.synchronize()
