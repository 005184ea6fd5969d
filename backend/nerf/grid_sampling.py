"""Marching rays through nerfacc's occupancy grid (CUDA), with fewer host synchronisations than nerfacc's own
``OccGridEstimator.sampling``.

The samples are the same as ``OccGridEstimator.sampling``'s (equal, tested in tests/nerf/test_grid_sampling_cuda.py):
nerfacc's ``traverse_grids`` marches the occupied cells, then samples that are invisible are dropped: transmittance
below ``early_stop_eps`` or alpha below min(``alpha_threshold``, the grid's mean occupancy). What differs is only
how many times the host waits for the GPU: nerfacc's method reads the mean occupancy back (``.item()``), picks the
interval edges with two boolean masks and filters three tensors with a third mask, a host synchronisation each
(six after the traversal). Here the edges are gathered with ``nonzero_static`` at the sample count the traversal
already gave the host, the occupancy threshold stays on the device, and the visible samples are picked with one
``nonzero``: one synchronisation after the traversal. A step whose GPU waits for the host between these reads
(bench/generate.py's profile: ~21 synchronisations a ``fast`` step, 2026-12-03) loses less time.

Lengths along rays are world units.
"""

from __future__ import annotations

from collections.abc import Callable

import nerfacc
import torch
from nerfacc.grid import traverse_grids
from nerfacc.volrend import render_transmittance_from_density

from backend.profiling import host_wait

# (t_starts [S], t_ends [S], ray_indices [S]) -> density [S] (post-activation), as nerfacc's sigma_fn
DensityFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def march_occupied(grid: nerfacc.OccGridEstimator, origins: torch.Tensor, directions: torch.Tensor,
                   render_step: float, stratified: bool = False) -> tuple[torch.Tensor, torch.Tensor,
                                                                          torch.Tensor, torch.Tensor]:
    """Every sample of ``render_step`` through occupied cells of rays (origins, unit directions [R, 3]) from 0 to
    infinity (the grid's box bounds them), cone angle 0; ``stratified``: each ray's start jittered within a step
    (from the global RNG, as nerfacc). Returns ray indices [S], t_starts [S], t_ends [S] and packed_info [R, 2]."""
    near = torch.zeros_like(origins[:, 0])
    far = torch.full_like(origins[:, 0], 1e10)
    if stratified:
        near += torch.rand_like(near) * render_step
    with host_wait():  # the traversal reads its sample count back to size its outputs
        intervals, samples, _ = traverse_grids(origins, directions, grid.binaries, grid.aabbs, near_planes=near,
                                               far_planes=far, step_size=render_step, cone_angle=0.0)
    count = samples.ray_indices.shape[0]  # a host int: the traversal sized its outputs
    t_starts = intervals.vals[_true_positions(intervals.is_left, count)]
    t_ends = intervals.vals[_true_positions(intervals.is_right, count)]
    return samples.ray_indices, t_starts, t_ends, samples.packed_info


def visible_samples(grid: nerfacc.OccGridEstimator, origins: torch.Tensor, directions: torch.Tensor,
                    density: DensityFunction | None, render_step: float, stratified: bool = False,
                    alpha_threshold: float = 0.0, early_stop_eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor,
                                                                                          torch.Tensor, int]:
    """``OccGridEstimator.sampling(origins, directions, sigma_fn=density, near_plane=0, far_plane=1e10,
    render_step_size=render_step, stratified=stratified, alpha_thre=alpha_threshold, early_stop_eps=early_stop_eps,
    cone_angle=0)``: ray indices [S], t_starts [S], t_ends [S] of the visible samples, and how many samples the
    march gave through occupied cells (a host int: the density was queried at each of them)."""
    ray_indices, t_starts, t_ends, packed_info = march_occupied(grid, origins, directions, render_step, stratified)
    marched = t_starts.shape[0]
    if density is None or (alpha_threshold <= 0.0 and early_stop_eps <= 0.0) or marched == 0:
        return ray_indices, t_starts, t_ends, marched
    with torch.no_grad():
        sigmas = density(t_starts, t_ends, ray_indices)
        transmittance, alphas = render_transmittance_from_density(t_starts, t_ends, sigmas, packed_info)
        visible = transmittance >= early_stop_eps
        if alpha_threshold > 0.0:
            # min(alpha_threshold, mean occupancy) as nerfacc takes it, kept on the device (alphas are >= 0, so a
            # threshold of 0 keeps every sample, as nerfacc's skipped mask does)
            threshold = grid.occs.mean().clamp(max=alpha_threshold)
            visible &= alphas >= threshold
        with host_wait():
            kept = visible.nonzero().squeeze(-1)  # the one host synchronisation: how many samples are visible
    return ray_indices[kept], t_starts[kept], t_ends[kept], marched


def _true_positions(mask: torch.Tensor, count: int) -> torch.Tensor:
    """The positions of the ``count`` true entries of ``mask`` (which has exactly that many), without reading the
    count back from the device."""
    return torch.nonzero_static(mask, size=count).squeeze(-1)
