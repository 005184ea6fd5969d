"""On CUDA (marked ``gpu``): backend.nerf.grid_sampling's marching gives exactly the samples of nerfacc's
``OccGridEstimator.sampling`` (the same ray indices and interval ends, bit for bit: the same traversal and the same
masks, only read back fewer times), on a grid whose occupancy comes from a real field, with and without the
alpha threshold, stratified from the same RNG state, and on rays that miss the grid."""

from __future__ import annotations

import pytest
import torch

from backend.diffusion.cameras import make_view_cameras
from backend.nerf.grid_sampling import visible_samples
from backend.profiling import HostClock
from backend.nerf.presets import preset
from backend.nerf.rays import camera_rays
from backend.nerf.renderer import VolumeRenderer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DEVICE = torch.device("cuda")


def _ball_density(points: torch.Tensor) -> torch.Tensor:
    """A soft ball of radius 0.5 at the origin (density ~ 50 inside, falling off outside)."""
    return 50.0 * torch.sigmoid((0.5 - points.norm(dim=-1)) * 40.0)


@pytest.fixture(scope="module")
def grid_and_rays():
    config = preset("fast").renderer
    renderer = VolumeRenderer(config, radius=1.0, device=DEVICE)
    renderer.grid.train()
    for step in range(3):  # warm-up updates visit every cell: a ball of occupied cells
        renderer.grid.update_every_n_steps(step=step, occ_eval_fn=lambda x: _ball_density(x)[:, None]
                                           * config.render_step, occ_thre=config.grid_occupancy_threshold,
                                           ema_decay=config.grid_ema_decay, warmup_steps=256, n=1)
    cameras = make_view_cameras([15.0, 0.0, -10.0, 30.0], [0.0, 90.0, 180.0, 270.0], 2.0, 40.0)
    origins, directions = camera_rays(cameras.c2w.to(DEVICE), cameras.fovy, 48, 48)
    origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
    # and rays that miss the grid's box altogether
    origins = torch.cat([origins, torch.tensor([[5.0, 5.0, 5.0]], device=DEVICE).expand(64, 3)])
    directions = torch.cat([directions, torch.tensor([[0.0, 0.0, 1.0]], device=DEVICE).expand(64, 3)])
    return renderer, config, origins.contiguous(), directions.contiguous()


@pytest.mark.parametrize("alpha_threshold", [0.01, 0.0])
@pytest.mark.parametrize("stratified", [True, False])
def test_the_samples_are_nerfaccs_exactly(grid_and_rays, alpha_threshold, stratified):
    renderer, config, origins, directions = grid_and_rays

    def density(t_starts, t_ends, ray_indices):
        mid = (t_starts + t_ends)[:, None] / 2.0
        return _ball_density(origins[ray_indices] + directions[ray_indices] * mid)

    torch.manual_seed(7)
    expected = renderer.grid.sampling(origins, directions, sigma_fn=density, near_plane=0.0, far_plane=1e10,
                                      render_step_size=config.render_step, stratified=stratified,
                                      alpha_thre=alpha_threshold, early_stop_eps=config.early_stop_eps,
                                      cone_angle=0.0)
    torch.manual_seed(7)
    clock = HostClock()  # the march's and the filter's waits for the device are summed (bench/trajectory.py)
    torch.cuda.synchronize()
    torch.cuda._sleep(50_000_000)  # queued device work the march must wait for
    clock.start()
    try:
        *got, marched = visible_samples(renderer.grid, origins, directions, density, config.render_step,
                                        stratified, alpha_threshold, config.early_stop_eps)
    finally:
        clock.stop()
    assert clock.wait_seconds > 0.001  # the sleep (~25-50 ms of device time) was waited for inside the march
    assert expected[0].numel() > 1000  # the ball is hit: a real test of the masks
    assert marched > expected[0].numel()  # the ball's far side and inside: marched, then dropped as invisible
    for want, have in zip(expected, got):
        assert have.dtype == want.dtype
        assert torch.equal(have, want)


def test_an_empty_grid_gives_no_samples(grid_and_rays):
    renderer, config, origins, directions = grid_and_rays
    empty = VolumeRenderer(config, radius=1.0, device=DEVICE)  # never updated: no occupied cell
    never_called = lambda t_starts, t_ends, ray_indices: pytest.fail("no sample to query")  # noqa: E731
    ray_indices, t_starts, t_ends, marched = visible_samples(empty.grid, origins, directions, never_called,
                                                             config.render_step, True, config.alpha_threshold,
                                                             config.early_stop_eps)
    assert ray_indices.numel() == t_starts.numel() == t_ends.numel() == marched == 0
