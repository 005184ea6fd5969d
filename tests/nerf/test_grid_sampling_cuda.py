"""On CUDA (marked ``gpu``): backend.nerf.grid_sampling's marching gives exactly the samples of nerfacc's
``OccGridEstimator.sampling`` (the same ray indices and interval ends, bit for bit: the same traversal and the same
masks, only read back fewer times), on a grid whose occupancy comes from a real field, with and without the
alpha threshold, stratified from the same RNG state, and on rays that miss the grid. On the march's side stream
(``MarchStream``) the march waits for the grid's latest write, not for other work queued before it."""

from __future__ import annotations

import pytest
import torch

from backend.diffusion.cameras import make_view_cameras
from backend.nerf.grid_sampling import MarchStream, visible_samples
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


def _sleep_ms(cycles: int) -> float:
    """How long ``torch.cuda._sleep(cycles)`` keeps the current stream busy, in ms (measured: clocks differ)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def _all_marched(renderer, config, origins, directions):
    torch.manual_seed(11)
    return renderer.grid.sampling(origins, directions, sigma_fn=None, near_plane=0.0, far_plane=1e10,
                                  render_step_size=config.render_step, stratified=True, cone_angle=0.0)


def test_the_march_on_its_side_stream_does_not_wait_for_other_queued_work(grid_and_rays):
    renderer, config, origins, directions = grid_and_rays
    expected = _all_marched(renderer, config, origins, directions)
    stream = MarchStream(DEVICE)
    stream.grid_written()
    cycles = 200_000_000
    busy_ms = _sleep_ms(cycles)
    torch.manual_seed(11)
    clock = HostClock()
    torch.cuda.synchronize()
    torch.cuda._sleep(cycles)  # the current stream's queued work (a backward pass, in a run)
    clock.start()
    try:
        *got, marched = visible_samples(renderer.grid, origins, directions, None, config.render_step, True,
                                        stream=stream)
    finally:
        clock.stop()
    # The march's count readback waited for the traversal only, not for the sleep queued before it on the other
    # stream (a margin of half the sleep: the traversal itself takes well under a millisecond here).
    assert clock.wait_seconds * 1000 < 0.5 * busy_ms, (clock.wait_seconds, busy_ms)
    assert marched == expected[0].numel() > 1000
    torch.cuda.current_stream().synchronize()  # the hand-over: the current stream waits for the march
    for want, have in zip(expected, got):
        assert torch.equal(have, want)


def test_the_march_on_its_side_stream_waits_for_the_grids_latest_write(grid_and_rays):
    renderer, config, origins, directions = grid_and_rays
    expected = _all_marched(renderer, config, origins, directions)
    loaded = VolumeRenderer(config, radius=1.0, device=DEVICE)  # an empty grid until the state is loaded
    stream = loaded.march_stream()
    assert stream is not None
    torch.cuda.synchronize()
    torch.cuda._sleep(200_000_000)
    loaded.load_grid_state(renderer.grid_state())  # queued behind the sleep on the current stream
    torch.manual_seed(11)
    *got, marched = visible_samples(loaded.grid, origins, directions, None, config.render_step, True,
                                    stream=stream)
    assert marched == expected[0].numel() > 1000  # the loaded grid's cells, not the empty grid's none
    for want, have in zip(expected, got):
        assert torch.equal(have, want)


def test_rendered_views_are_the_same_on_either_stream(grid_and_rays, monkeypatch):
    """``render_views`` with its rays and march on the side stream renders what the one-stream way renders (the
    same kernels on the same inputs), queued behind other work on the current stream."""
    from backend.nerf import grid_sampling
    from backend.nerf.field import RadianceField

    renderer, config, _, _ = grid_and_rays
    torch.manual_seed(3)
    field = RadianceField(preset("fast").field).to(DEVICE)
    cameras = make_view_cameras([15.0, 0.0], [0.0, 120.0], 2.0, 40.0)

    def render():
        torch.manual_seed(5)
        torch.cuda._sleep(50_000_000)
        with torch.no_grad():
            out = renderer.render_views(field, cameras, 64, 64, stratified=True)
        return out.rgb, out.opacity

    monkeypatch.setattr(grid_sampling, "MARCH_ON_SIDE_STREAM", False)
    one_stream = render()
    monkeypatch.setattr(grid_sampling, "MARCH_ON_SIDE_STREAM", True)
    side_stream = render()
    assert renderer.march_stream() is not None
    assert one_stream[1].sum() > 1.0  # the field's initial blob is seen
    for want, have in zip(one_stream, side_stream):
        # nerfacc composites with index_add_ (atomic adds): a ray's sum may be taken in another order
        torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-6)
