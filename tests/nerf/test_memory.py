"""GPU memory plan (backend.nerf.memory) on CPU-sized settings: the refusal names a preset that fits, a run over its
plain budget evaluates the field in checkpointed chunks with the plain evaluation's values and gradients."""

from __future__ import annotations

import pytest
import torch

from backend.events import Failed
from backend.models.multiview_model import build_tiny_model
from backend.nerf.field import RadianceField
from backend.nerf.memory import plan_memory
from backend.nerf.presets import preset
from backend.nerf.renderer import evaluate_samples
from backend.nerf.shading import Lighting
from backend.nerf.trainer import SDSTrainer, generate
from tests.helpers.targets import small_config

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    return build_tiny_model(seed=0)


def test_checkpointed_chunks_equal_the_plain_evaluation():
    config = small_config().field
    torch.manual_seed(0)
    field = RadianceField(config)
    points = (torch.rand(300, 3) - 0.5) * 0.9
    directions = torch.nn.functional.normalize(torch.randn(300, 3), dim=-1)
    light = torch.full((300, 3), 1.5)
    lighting = Lighting("diffuse", 0.4, None)
    results = []
    for checkpointed in (False, True):
        field.zero_grad()
        density, colour, normals, orientation = evaluate_samples(field, points, directions, light, lighting, True,
                                                                 checkpointed, chunk=64)
        (density.sum() + colour.square().sum() + orientation.sum() + normals[:, 0].sum()).backward()
        results.append(([density, colour, normals, orientation], [p.grad.clone() for p in field.parameters()]))
    (values, grads), (values_ckpt, grads_ckpt) = results
    # The same float32 operations on the same samples (chunks of 64 instead of one batch of 300): equal up to
    # the MLP's matmul blocking, far below 1e-5 relative.
    for plain, chunked in zip(values + grads, values_ckpt + grads_ckpt):
        torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-6)


def test_plan_grows_with_the_render_size_and_a_small_cap_sets_a_sample_budget(model):
    small = small_config()
    large = small_config(phases__resolution_after=48)
    plan_small, plan_large = plan_memory(small, model, CPU), plan_memory(large, model, CPU)
    assert plan_small.cap_gib is None and plan_small.sample_budget is None  # CPU, no cap: nothing limited
    assert plan_large.rays_per_step == 4 * plan_small.rays_per_step
    assert plan_large.need_gib(False) > plan_small.need_gib(False)
    # kept under checkpointing: points and outputs, far less than the hash grid's intermediates
    assert plan_small.bytes_per_sample_checkpointed < plan_small.bytes_per_sample / 5
    capped = small_config(run__max_gpu_memory=round((plan_small.need_gib(True) + plan_small.need_gib(False)) / 2, 4))
    plan = plan_memory(capped, model, CPU)
    assert plan.fits and plan.sample_budget is not None


def test_a_capped_step_checkpoints_and_matches_the_uncapped_step(model):
    context = torch.zeros(1, 1, model.unet.config.cross_attention_dim)
    base = small_config(steps=4)
    need = plan_memory(base, model, CPU)
    losses = []
    for cap in (0.0, round((need.need_gib(True) + need.need_gib(False)) / 2, 4)):
        config = small_config(steps=4, run__max_gpu_memory=cap)
        trainer = SDSTrainer(config, model, context, "unused", CPU)
        if cap:
            trainer.renderer.sample_budget = 4000  # below a step's samples: several checkpointed chunks
        losses.append(trainer.train_step()["loss"])
        assert trainer.renderer.last_sample_count > (4000 if cap else 0)
    # one step from the same seed: the same renders up to float32 rounding of the chunked MLP
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


def test_a_run_that_cannot_fit_is_refused_at_the_start_naming_a_preset_that_fits(model, tmp_path):
    def need(name):
        config = preset(name)
        config.run.max_gpu_memory = 1000.0
        return plan_memory(config, model, CPU).need_gib(True)

    reference, draft = need("reference"), need("draft")
    assert draft < reference
    config = preset("reference")
    config.run.max_gpu_memory = round((draft + reference) / 2, 3)
    image = torch.zeros(1, 3, 256, 256)
    events = list(generate(model, config, tmp_path / "job", image=image, device=CPU))
    assert len(events) == 1 and isinstance(events[0], Failed) and events[0].code == "not_enough_memory"
    message = events[0].message
    assert "GiB" in message and "preset fits" in message and "'reference'" not in message.split("fits")[0][-30:]
    assert not (tmp_path / "job" / "checkpoint.pt").exists()  # refused before anything was written


def test_a_cap_below_every_preset_says_so(model, tmp_path):
    config = small_config(run__max_gpu_memory=1e-4)
    events = list(generate(model, config, tmp_path / "job", image=torch.zeros(1, 3, 256, 256), device=CPU))
    assert isinstance(events[-1], Failed) and events[-1].code == "not_enough_memory"
    assert "no preset fits" in events[-1].message


def test_cli_refuses_a_negative_cap_in_one_line(tmp_path, capsys):
    from backend.cli import main

    code = main(["generate", "examples/example.png", "--model", "tiny", "--device", "cpu", "--max-gpu-memory", "-1",
                 "--out", str(tmp_path / "a.glb"), "--quiet"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "max_gpu_memory" in error and len(error.splitlines()) == 1
