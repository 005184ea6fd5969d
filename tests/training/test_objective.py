"""Stage-2 objective: the reference frame takes part in attention but its prediction never enters the loss."""

from __future__ import annotations

import torch

from backend.diffusion.cameras import encode_cameras
from backend.models.multiview_model import build_tiny_model
from training.objective import build_unet_inputs, epsilon_loss, reference_camera


def _inputs(with_reference: bool, batch=2, frames=4):
    generator = torch.Generator().manual_seed(0)
    shape = (batch, frames, 4, 8, 8)
    model = build_tiny_model(seed=3)
    reference = torch.randn(batch, 4, 8, 8, generator=generator).requires_grad_(True)
    inputs = build_unet_inputs(
        clean_latents=torch.randn(shape, generator=generator),
        noise=torch.randn(shape, generator=generator),
        timesteps=torch.tensor([100, 900]),
        context=torch.randn(batch, 1, 64, generator=generator),
        cameras=encode_cameras([30.0] * frames * batch, [0.0, 90.0, 180.0, 270.0] * batch).view(batch, frames, 16),
        alphas_cumprod=model.alphas_cumprod,
        reference_latents=reference if with_reference else None,
        reference_camera_code=reference_camera("isotropic3d") if with_reference else None,
    )
    return model, inputs, reference


def test_reference_frame_is_last_clean_frame_at_t0_with_front_camera():
    _, inputs, reference = _inputs(with_reference=True)
    assert inputs.num_frames == 5 and inputs.x.shape[0] == 10
    assert inputs.is_target.view(2, 5).tolist() == [[True] * 4 + [False]] * 2
    rows = inputs.x.view(2, 5, 4, 8, 8)
    assert torch.equal(rows[:, 4], reference.detach())  # clean: not noised
    assert inputs.timesteps.view(2, 5)[:, 4].tolist() == [0, 0]
    assert inputs.timesteps.view(2, 5)[:, :4].tolist() == [[100] * 4, [900] * 4]
    front = encode_cameras([0.0], [0.0], "isotropic3d")[0]
    assert torch.equal(inputs.camera.view(2, 5, 16)[:, 4], front.expand(2, 16))
    assert torch.equal(inputs.context.view(2, 5, 1, 64)[:, 0], inputs.context.view(2, 5, 1, 64)[:, 4])


def test_reference_prediction_gets_no_gradient_but_reference_latent_steers_targets():
    model, inputs, reference = _inputs(with_reference=True)
    unet = model.unet.train().requires_grad_(True)
    x = inputs.x.detach().requires_grad_(True)
    prediction = unet(x, inputs.timesteps, context=inputs.context, camera=inputs.camera, num_frames=inputs.num_frames)
    prediction.retain_grad()
    epsilon_loss(prediction, inputs).backward()
    gradient = prediction.grad.view(2, 5, -1)
    assert torch.count_nonzero(gradient[:, 4]) == 0  # the reference frame's prediction is discarded
    assert torch.count_nonzero(gradient[:, :4]) == gradient[:, :4].numel()
    # ...yet the reference frame's input reaches the targets' predictions through the multi-view attention.
    assert x.grad.view(2, 5, -1)[:, 4].abs().sum() > 0


def test_stage1_inputs_are_targets_only():
    _, inputs, _ = _inputs(with_reference=False)
    assert inputs.num_frames == 4 and bool(inputs.is_target.all())
    assert inputs.epsilon.shape == inputs.x.shape
