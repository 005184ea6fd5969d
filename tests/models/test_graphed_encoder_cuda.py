"""On CUDA (marked ``gpu``): the VAE encoder replayed from CUDA graphs (backend.models.graphed_encoder) gives the
compiled encoder's moments and input gradients, step after step with new images (the graphs read the new input,
not the captured one), records once per shape, and gives its memory back when released or when a new shape comes.
The published VAE size with random weights, float16 under float16 autocast, as the SDS step runs it."""

from __future__ import annotations

import pytest
import torch

from backend.models.acceleration import compile_vae_encoder
from backend.models.graphed_encoder import GraphedEncoder
from backend.models.multiview_model import build_random_published_model
from backend.models.vae import encode_latents

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DEVICE = torch.device("cuda")


@pytest.fixture(scope="module")
def model():
    model = build_random_published_model(seed=0, device=DEVICE).to(dtype=torch.float16).eval()
    return compile_vae_encoder(model, "default", cuda_graphs=True)


def _latents_and_grad(model, moments, images, seed: int):
    source = images.clone().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.float16):
        latents = encode_latents(model.vae, source, torch.Generator(DEVICE).manual_seed(seed), moments).float()
    weights = torch.linspace(-1, 1, latents.numel(), device=DEVICE).reshape(latents.shape)
    (latents * weights).sum().backward()
    return latents.detach().clone(), source.grad.clone()


def test_replays_give_the_compiled_encoders_values_for_new_images(model):
    graphed = model.vae_encoder_moments
    assert isinstance(graphed, GraphedEncoder)
    captures = []
    graphed.before_capture = lambda: captures.append(1)
    generator = torch.Generator(DEVICE).manual_seed(0)
    for step in range(3):  # the first call records, the next ones replay on other images
        images = torch.rand(4, 3, 256, 256, device=DEVICE, generator=generator) * 2 - 1
        want = _latents_and_grad(model, graphed.moments, images, step)
        got = _latents_and_grad(model, graphed, images, step)
        # the same kernels on the same inputs: equal up to the order float16 atomics land in (convolution
        # backward), a few units in the last place of values of order 1
        for have, expected in zip(got, want):
            torch.testing.assert_close(have, expected, rtol=2e-3, atol=2e-3)
        assert not torch.equal(got[0], torch.zeros_like(got[0]))
    assert len(captures) == 1


def test_a_new_shape_records_anew_and_release_gives_the_pool_back(model):
    graphed = model.vae_encoder_moments
    graphed.before_capture = None
    images = torch.rand(8, 3, 256, 256, device=DEVICE) * 2 - 1
    _latents_and_grad(model, graphed, images, 0)
    as_encoded = images.half().requires_grad_(True)  # the encoder sees the VAE's dtype (encode_latents casts)
    with torch.autocast("cuda", dtype=torch.float16):  # and the step's autocast, part of what a graph is kept for
        assert not graphed.would_capture(as_encoded)
    assert graphed.would_capture(as_encoded)  # without autocast: other kernels, another graph
    held = torch.cuda.memory_reserved(DEVICE)
    graphed.release()
    assert torch.cuda.memory_reserved(DEVICE) < held  # the graphs' pool went back to the device
    small = torch.rand(4, 3, 256, 256, device=DEVICE) * 2 - 1
    with torch.autocast("cuda", dtype=torch.float16):
        assert graphed.would_capture(small.half().requires_grad_(True))
    want = _latents_and_grad(model, graphed.moments, small, 1)
    got = _latents_and_grad(model, graphed, small, 1)
    torch.testing.assert_close(got[0], want[0], rtol=2e-3, atol=2e-3)
    graphed.release()
