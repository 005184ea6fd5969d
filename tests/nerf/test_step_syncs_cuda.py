"""On CUDA (marked ``gpu``): an SDS step waits for the GPU only where it must. With the tiny model (eager UNet and
VAE, the fused hash grid, nerfacc's marching), a step that does not update the occupancy grid synchronises the host
with the device through torch's ops once: for the visible samples (how many there are; nerfacc's traversal adds two
reads of its own, which backend.profiling.HostSyncs cannot see). The step's losses are not read in the step: they
are copied to pinned memory behind an event (backend.nerf.trainer.StepLosses) and the fused optimiser skips a
non-finite step on the device. A copy of a camera, light or code from pageable memory, an ``.item()`` or a boolean
mask added to the step would show here, by call site."""

from __future__ import annotations

import pytest
import torch

from backend.nerf.trainer import GenerationError, SDSTrainer
from backend.profiling import HostSyncs
from tests.helpers.targets import small_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ALLOWED_PER_STEP = 1


def _trainer(tmp_path, steps=40):
    from backend.models.multiview_model import build_tiny_model

    model = build_tiny_model(seed=0).to("cuda").eval()
    context = torch.randn(1, 1, model.unet.config.cross_attention_dim, device="cuda")
    config = small_config(steps=steps, run__mesh_every=0, run__views_every=0, run__checkpoint_every=0)
    config.renderer.grid_update_every = 16
    return SDSTrainer(config, model, context, tmp_path, "cuda")


def test_a_step_synchronises_the_host_only_for_its_samples(tmp_path):
    trainer = _trainer(tmp_path)
    for _ in range(17):  # compiles, and the grid's first updates (steps 0 and 16)
        trainer.train_step()
    syncs = HostSyncs()
    syncs.start()
    steps = 6  # steps 17..22: no grid update
    queued = [trainer.train_step() for _ in range(steps)]
    sites = syncs.stop(steps, top=20)
    # torch's own code (a line of torch/cuda/__init__.py) synchronised once in the window on the H200 (2026-12-03),
    # as it does once in every profile window of bench/generate.py whatever the window's length (0.05 a step over
    # 20 steps, 0.1 over 10): a one-off of torch's, not a step's, and not this code's. The figures a step are
    # rounded to 0.01 (once in 6 steps: 0.17), so torch's count is rounded back to whole synchronisations.
    ours = [site for site in sites if not site["where"].startswith("cuda/")]
    torch_own = round(sum(site["per_step"] for site in sites if site["where"].startswith("cuda/")) * steps)
    assert sum(site["per_step"] for site in ours) <= ALLOWED_PER_STEP, sites
    assert torch_own <= 1, sites
    assert any(site["where"].startswith("nerf/grid_sampling.py:") for site in sites), sites  # the count: counted
    assert not any(site["where"].startswith("nerf/trainer.py:") for site in sites), sites  # the losses: not read
    values = [losses.values() for losses in queued]  # read after the steps, each behind its own event
    assert [losses.step for losses in queued] == list(range(17, 23)) and all(v["loss"] == v["loss"] for v in values)


def test_a_non_finite_loss_skips_its_update_on_the_device_and_fails_when_read(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.train_step().values()
    with torch.no_grad():
        trainer.field.albedo_mlp[0].weight.fill_(float("nan"))  # NaN colours (the samples stay): a NaN loss
    kept = {name: p.detach().clone() for name, p in trainer.field.named_parameters()}
    steps_before = [int(state["step"]) for state in trainer.optimizer.state.values()]
    losses = trainer.train_step()  # queued without reading the loss
    with pytest.raises(GenerationError) as error:
        losses.values()
    assert error.value.code == "nan_loss" and "at step 1" in error.value.message
    for name, parameter in trainer.field.named_parameters():  # the update was skipped: the NaN weights stay as set
        torch.testing.assert_close(parameter.detach(), kept[name], equal_nan=True, rtol=0, atol=0)
    assert [int(state["step"]) for state in trainer.optimizer.state.values()] == steps_before
