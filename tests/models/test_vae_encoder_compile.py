"""The SDS path's VAE encoder compiled (backend.models.acceleration.compile_vae_encoder): which runs compile it, and
that the traced path gives the eager VAE's latents and input gradients. torch.compile's "aot_eager" backend here:
the graph capture and AOTAutograd forward/backward split of a real compile, run without generating kernels (no C++
toolchain needed); Inductor's kernels are measured on CUDA by bench/generate.py."""

from __future__ import annotations

import pytest
import torch

from backend.models.acceleration import (accelerate_for_run, compile_vae_encoder, vae_encoder_compile_mode,
                                         vae_encoder_graphs)
from backend.models.graphed_encoder import GraphedEncoder, ungraphed
from backend.models.multiview_model import build_tiny_model
from backend.models.vae import encode_latents


def test_the_encoder_is_compiled_on_cuda_whenever_the_unet_is():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert vae_encoder_compile_mode("cudagraphs", cuda) == "default"  # its graphs: backend.models.graphed_encoder
    assert vae_encoder_compile_mode("default", cuda) == "default"
    assert vae_encoder_compile_mode("off", cuda) is None
    assert vae_encoder_compile_mode("cudagraphs", cpu) is None
    assert vae_encoder_compile_mode("default", cpu) is None
    # replayed from CUDA graphs where the UNet is (--compile cudagraphs, what auto means on CUDA), nowhere else
    assert vae_encoder_graphs("cudagraphs", cuda)
    assert not vae_encoder_graphs("default", cuda) and not vae_encoder_graphs("off", cuda)
    assert not vae_encoder_graphs("cudagraphs", cpu)


def test_a_graphed_encoder_off_cuda_or_without_gradient_runs_the_encoder_itself():
    calls = []

    def moments(images):
        calls.append(images.shape)
        return images * 2.0

    encoder = GraphedEncoder(moments)
    encoder.before_capture = lambda: pytest.fail("nothing is captured off CUDA")
    images = torch.ones(2, 3, 8, 8, requires_grad=True)
    assert not encoder.would_capture(images)
    out = encoder(images)
    out.sum().backward()
    assert calls == [images.shape] and torch.equal(images.grad, torch.full_like(images, 2.0))
    with torch.no_grad():
        encoder(images)
    assert len(calls) == 2 and ungraphed(encoder) is moments and ungraphed(moments) is moments
    encoder.release()  # nothing captured: nothing to give back


# slow: compiles the encoder on the CPU (~9 s); the compiled encoder runs on CUDA only, where the GPU benchmarks use
# it
@pytest.mark.slow
def test_compiled_encoder_gives_the_eager_latents_and_gradients():
    model = build_tiny_model(seed=0).eval()  # its own model: the session's tiny_model is not touched
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def latents_and_grad(moments):
        source = images.clone().requires_grad_(True)
        latents = encode_latents(model.vae, source, torch.Generator().manual_seed(5), moments)
        (latents * torch.linspace(-1, 1, latents.numel()).reshape(latents.shape)).sum().backward()
        return latents.detach(), source.grad

    eager_latents, eager_grad = latents_and_grad(None)
    compile_vae_encoder(model, "default", channels_last=True, backend="aot_eager")
    assert model.vae_encoder_moments is not None
    # the encoder's attention as plain matmuls and a softmax (compared below with the eager SDPA it replaced); the
    # decoder's, which the previews run, untouched
    assert type(model.vae.encoder.mid_block.attentions[0].processor).__name__ == "AttnProcessor"
    assert type(model.vae.decoder.mid_block.attentions[0].processor).__name__ == "AttnProcessor2_0"
    compiled_latents, compiled_grad = latents_and_grad(model.vae_encoder_moments)
    # channels-last convolutions sum in another order: float32 rounding, relative 1e-5 of values of order 1
    torch.testing.assert_close(compiled_latents, eager_latents, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-5, atol=1e-5)
    compile_vae_encoder(model, None)
    assert model.vae_encoder_moments is None


def test_a_run_applies_compile_to_the_unet_and_leaves_the_cpu_encoder_eager():
    model = build_tiny_model(seed=0).eval()  # its own model: the session's tiny_model is not touched
    unet = model.unet
    assert accelerate_for_run(model, "off", torch.device("cpu")).unet is unet
    accelerate_for_run(model, "default", torch.device("cpu"))
    assert model.eager_unet is unet and model.unet is not unet  # compiled lazily: nothing runs until it is called
    assert model.vae_encoder_moments is None  # the CPU's few steps would not pay for compiling the encoder
