"""The floor (bench/floor.py) times the guidance UNet and the VAE encoder on the calls a run makes: a compiled
function guards on its inputs' dtypes, strides and grad mode, so a floor call that differs compiles anew and times
that graph, not the run's. The UNet's once differed (float16 camera codes where SDSGuidance passes float32 ones,
contiguous latents where the encoder gives channels-last ones); the encoder's did (contiguous images where a step
gives channels-last renders, and latents encoded without gradient), which on an H200 took the encoder past Dynamo's
recompile limit, so that the floor's last encoder figure ran eager."""

from __future__ import annotations

import pytest
import torch

from backend.models.acceleration import compile_vae_encoder
from backend.nerf.trainer import SDSTrainer
from bench.floor import guidance_ms
from tests.helpers.targets import small_config


# slow: Dynamo traces the tiny UNet and a trainer step runs (~20 s on a 2-core machine); .ci/run runs it
@pytest.mark.slow
def test_the_floor_calls_the_guidance_unet_as_a_run_step_does(tmp_path):
    from backend.models.multiview_model import build_tiny_model

    model = build_tiny_model(seed=0).eval()  # its own model: the session's tiny_model is not touched
    model.unet_context_dim = model.unet.config.cross_attention_dim  # as bench/generate.py's build_model sets it
    compiled, calls = [], []

    def counting_backend(graph_module, example_inputs):  # Dynamo's guards and graphs, no code generation
        compiled.append(graph_module)

        def run(*args):
            calls.append(1)
            return graph_module.forward(*args)

        return run

    torch._dynamo.reset()
    model.unet = torch.compile(model.unet, backend=counting_backend, dynamic=False)
    compile_vae_encoder(model, backend=counting_backend)  # the run's encoder: channels-last, its own function
    config = small_config(steps=4, run__mesh_every=0, run__views_every=0, run__checkpoint_every=0)
    assert config.phases.resolution_before != config.guidance.latent_resolution_input  # the renders are resized
    trainer = SDSTrainer(config, model, torch.randn(1, 1, model.unet_context_dim), tmp_path, "cpu")
    trainer.train_step()  # phase 1: 2 objects x 4 views
    assert len(compiled) == 2 and calls, "the step did not call the compiled UNet and encoder"
    graphs, step_calls = len(compiled), len(calls)
    views = config.phases.objects_before * config.cameras.views_per_object
    guidance_ms(model, torch.device("cpu"), config, views, repeats=1, warmup=0, moments=model.vae_encoder_moments,
                resolution=config.phases.resolution_before)
    assert len(calls) > step_calls  # the floor called the UNet and the encoder ...
    assert len(compiled) == graphs  # ... through the graphs the step compiled: no guard failed
