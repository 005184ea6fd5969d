"""SDS guidance: CFG order and formula, the x0-reconstruction target, the timestep annealing, and convergence of
the whole SDS loop to a known object under an oracle denoiser."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from backend.diffusion.cameras import make_view_cameras, random_multiview_cameras
from backend.models.schedule import schedule_buffers
from backend.diffusion.sds import SDSGuidance, guided_noise, x0_reconstruction_target
from backend.events import Done, MeshUpdate
from backend.diffusion.sds import GuidanceConfig
from backend.nerf.renderer import VolumeRenderer
from backend.nerf.trainer import SDSTrainer
from tests.helpers.targets import SphereTarget, chamfer_distance, small_config, sphere_surface_points

ALPHAS = schedule_buffers()["alphas_cumprod"]


class ContextEcho(torch.nn.Module):
    """eps = context value (broadcast): shows which rows got the zero (uncond) and which the image context."""

    def forward(self, x, t, context, camera=None, num_frames=1):
        self.seen = (x.shape[0], num_frames, camera.shape)
        return context[:, 0, :1, None, None].expand_as(x).clone()


def test_cfg_uses_zero_uncond_first_and_scale():
    unet = ContextEcho()
    x = torch.zeros(4, 4, 8, 8)
    context = torch.full((4, 1, 5), 2.0)
    guided, cond = guided_noise(unet, x, torch.full((4,), 500), context, torch.zeros(4, 16), 4, 10.0)
    assert unet.seen == (8, 4, (8, 16))
    assert torch.all(cond == 2.0)
    assert torch.allclose(guided, torch.full_like(guided, 0.0 + 10.0 * (2.0 - 0.0)))


def test_x0_target_rescales_towards_conditional_std():
    torch.manual_seed(0)
    noisy, eps_c = torch.randn(8, 4, 4, 4), torch.randn(8, 4, 4, 4)
    eps_g = 3.0 * eps_c
    alpha = ALPHAS[600]
    x0_cfg = (noisy - (1 - alpha).sqrt() * eps_g) / alpha.sqrt()
    x0_c = (noisy - (1 - alpha).sqrt() * eps_c) / alpha.sqrt()
    target = x0_reconstruction_target(noisy, eps_g, eps_c, alpha, 4, 0.5)
    for group in range(2):
        rows = slice(4 * group, 4 * group + 4)
        factor = (x0_c[rows].std() + 1e-8) / (x0_cfg[rows].std() + 1e-8)
        assert torch.allclose(target[rows], 0.5 * factor * x0_cfg[rows] + 0.5 * x0_cfg[rows], atol=1e-5)
    assert torch.allclose(x0_reconstruction_target(noisy, eps_g, eps_c, alpha, 4, 0.0), x0_cfg)


def test_timestep_range_anneals_like_the_reference():
    guidance = SDSGuidance(ContextEcho(), ALPHAS, lambda x, g: x, GuidanceConfig(), total_steps=10000)
    assert (guidance.min_step, guidance.max_step) == (980, 980)
    guidance.update_step(4000)
    assert (guidance.min_step, guidance.max_step) == (500, 740)
    guidance.update_step(8000)
    assert (guidance.min_step, guidance.max_step) == (20, 500)
    guidance.update_step(9999)
    assert (guidance.min_step, guidance.max_step) == (20, 500)


def test_random_multiview_cameras_follow_the_reference_ranges():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        cams = random_multiview_cameras(2, 4, generator)
        elevation = cams.elevation.reshape(2, 4)
        assert torch.all(elevation == elevation[:, :1]) and torch.all((elevation >= 0) & (elevation <= 30))
        gaps = torch.diff(cams.azimuth.reshape(2, 4), dim=1)
        assert torch.allclose(gaps, torch.full_like(gaps, 90.0), atol=1e-4)
        fovy = cams.fovy.reshape(2, 4)[:, 0]
        relative = cams.distance.reshape(2, 4)[:, 0] * torch.tan(torch.deg2rad(fovy) / 2)
        assert torch.all((fovy >= 15) & (fovy <= 60)) and torch.all((relative >= 0.8 - 1e-5) & (relative <= 1.0 + 1e-5))
        positions = cams.c2w[:, :3, 3]
        assert torch.allclose(positions.norm(dim=-1), cams.distance, atol=1e-4)


class OracleDenoiser(torch.nn.Module):
    """A stand-in UNet whose noise prediction makes x0 equal the target object's render from each row's camera.

    The camera code (``mvdream`` encoding: the exact c2w rotation on the unit sphere) gives the view; the tests fix
    fovy and distance so that it determines the render fully. Latents are images in [-1, 1] (identity encoder).
    """

    def __init__(self, target, fovy: float, distance: float):
        super().__init__()
        self.target, self.fovy, self.distance = target, fovy, distance
        self.renderer = VolumeRenderer(small_config().renderer, 1.0)
        self.renderer.update_grid(0, target, force=True)

    def forward(self, x, t, context, camera=None, num_frames=1):
        c2w = camera.reshape(-1, 4, 4).double()
        direction = c2w[:, :3, 3]
        elevation = torch.rad2deg(torch.asin(direction[:, 2].clamp(-1, 1)))
        azimuth = torch.rad2deg(torch.atan2(direction[:, 0], -direction[:, 1]))
        cams = make_view_cameras(elevation, azimuth, self.distance, self.fovy)
        target = self.renderer.render_views(self.target, cams, x.shape[-2], x.shape[-1]).rgb.permute(0, 3, 1, 2)
        alpha = ALPHAS[t.long()].reshape(-1, 1, 1, 1)
        return (x - alpha.sqrt() * (target * 2 - 1)) / (1 - alpha).sqrt()


# slow: a convergence check over SDS steps (~11 s); the default run keeps the SDS formulas' tests above and the
# trainer's runs
@pytest.mark.slow
def test_sds_with_an_oracle_denoiser_converges_to_the_target(tmp_path):
    fovy, relative = 40.0, 0.9
    distance = relative / np.tan(np.radians(fovy) / 2)
    target = SphereTarget()
    config = small_config(
        steps=50, run__mesh_every=0, run__views_every=0, run__checkpoint_every=0,
        cameras__fovy_range="40,40", cameras__relative_radius_range="0.9,0.9", cameras__elevation_range="-30,60",
        guidance__camera_encoding="mvdream", guidance__latent_resolution_input=24, shading__albedo_only_until=1.0,
        loss__lambda_orient_start=0, loss__lambda_orient_end=0, optimizer__lr_mlp=0.01,
        mesh__resolution=48, phases__objects_before=1, phases__objects_after=1)
    model = types.SimpleNamespace(unet=OracleDenoiser(target, fovy, distance), vae=None, alphas_cumprod=ALPHAS,
                                  camera_encoding="mvdream", name="oracle")
    trainer = SDSTrainer(config, model, torch.zeros(1, 1, 8), tmp_path, latent_encoder=lambda x, g: x)
    events = list(trainer.run())
    assert isinstance(events[-1], Done), events[-1]
    final = [e for e in events if isinstance(e, MeshUpdate) and e.final][0]

    cams = make_view_cameras([15.0] * 4, [0.0, 90.0, 180.0, 270.0], distance, fovy)
    with torch.no_grad():
        fitted = trainer.renderer.render_views(trainer.field, cams, 32, 32).rgb
        wanted = model.unet.renderer.render_views(target, cams, 32, 32).rgb
    image_error = float((fitted - wanted).abs().mean())
    chamfer = chamfer_distance(final.vertices, sphere_surface_points())
    print(f"oracle SDS: image error {image_error:.4f}, chamfer {chamfer:.4f}")
    # measured on a 2-core AMD EPYC: 50 steps of one object (4 views) give an image error of 0.0125 and a Chamfer
    # distance of 0.043 (two objects a step: 0.012, 0.043 for 2.3x the CPU time; 100 steps: 0.007, 0.046; the
    # distance is set by the 48-cell mesh grid, 0.042 a cell): the bounds keep 4.8x and 1.4x
    assert image_error < 0.06, image_error
    assert chamfer < 0.06, chamfer
