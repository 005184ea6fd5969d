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

The density query itself is cut short where it cannot matter (``densities_until_opaque``): a sample past the point
where its ray's transmittance fell below ``early_stop_eps`` is invisible whatever its density (transmittance never
rises along a ray), so the density is queried in rounds along the rays (``window`` samples, then twice as many,
...), each round only of the rays still transparent enough after the rounds before. nerfacc queries every marched
sample, the inside and back of a formed object too; the visible samples are the same
(tests/nerf/test_grid_sampling_cuda.py, tests/nerf/test_grid_window.py).

Lengths along rays are world units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import nerfacc
import torch
from nerfacc.grid import traverse_grids
from nerfacc.volrend import render_transmittance_from_density

# (t_starts [S], t_ends [S], ray_indices [S]) -> density [S] (post-activation), as nerfacc's sigma_fn
DensityFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# How far a ray's optical depth summed by ``index_add_`` may be trusted against nerfacc's scan of the same terms (a
# float32 sum of a few dozen terms in another order: ~1e-6 relative): a ray counts as opaque only with this much
# relative depth to spare, so rounding can only query more samples, never drop a visible one.
_DEPTH_MARGIN = 1e-4


@dataclass
class MarchCounts:
    """Host ints of one march (no synchronisation to read them): samples the traversal gave through occupied cells,
    how many of them the density was queried at, and how many were visible."""

    marched: int = 0
    queried: int = 0
    visible: int = 0


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
    intervals, samples, _ = traverse_grids(origins, directions, grid.binaries, grid.aabbs, near_planes=near,
                                           far_planes=far, step_size=render_step, cone_angle=0.0)
    count = samples.ray_indices.shape[0]  # a host int: the traversal sized its outputs
    t_starts = intervals.vals[_true_positions(intervals.is_left, count)]
    t_ends = intervals.vals[_true_positions(intervals.is_right, count)]
    return samples.ray_indices, t_starts, t_ends, samples.packed_info


def visible_samples(grid: nerfacc.OccGridEstimator, origins: torch.Tensor, directions: torch.Tensor,
                    density: DensityFunction | None, render_step: float, stratified: bool = False,
                    alpha_threshold: float = 0.0, early_stop_eps: float = 1e-4,
                    window: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, MarchCounts]:
    """``OccGridEstimator.sampling(origins, directions, sigma_fn=density, near_plane=0, far_plane=1e10,
    render_step_size=render_step, stratified=stratified, alpha_thre=alpha_threshold, early_stop_eps=early_stop_eps,
    cone_angle=0)``: ray indices [S], t_starts [S], t_ends [S] of the visible samples, and the march's counts.
    ``window`` > 0: the density is queried as ``densities_until_opaque`` says (the same samples, fewer queries)."""
    ray_indices, t_starts, t_ends, packed_info = march_occupied(grid, origins, directions, render_step, stratified)
    marched = t_starts.shape[0]
    if density is None or (alpha_threshold <= 0.0 and early_stop_eps <= 0.0) or marched == 0:
        return ray_indices, t_starts, t_ends, MarchCounts(marched, 0, marched)
    with torch.no_grad():
        sigmas, queried = densities_until_opaque(t_starts, t_ends, ray_indices, packed_info[:, 0], density,
                                                 early_stop_eps, window)
        transmittance, alphas = render_transmittance_from_density(t_starts, t_ends, sigmas, packed_info)
        visible = transmittance >= early_stop_eps
        if alpha_threshold > 0.0:
            # min(alpha_threshold, mean occupancy) as nerfacc takes it, kept on the device (alphas are >= 0, so a
            # threshold of 0 keeps every sample, as nerfacc's skipped mask does)
            threshold = grid.occs.mean().clamp(max=alpha_threshold)
            visible &= alphas >= threshold
        kept = visible.nonzero().squeeze(-1)  # a host synchronisation: how many samples are visible
    return ray_indices[kept], t_starts[kept], t_ends[kept], MarchCounts(marched, queried, kept.shape[0])


def densities_until_opaque(t_starts: torch.Tensor, t_ends: torch.Tensor, ray_indices: torch.Tensor,
                           first_sample: torch.Tensor, density: DensityFunction, early_stop_eps: float,
                           window: int) -> tuple[torch.Tensor, int]:
    """Densities [S] of marched samples (packed by ray, front to back; ``first_sample`` [R]: each ray's first
    position), queried only where they can matter, and how many were queried.

    With ``window`` > 0 and ``early_stop_eps`` > 0 the samples are queried in rounds along the rays: each ray's first
    ``window`` samples, then the next 2 x ``window``, 4 x ``window``, ... of the rays whose transmittance so far,
    exp(-sum density * length), is still at least ``early_stop_eps``. A ray below it is opaque there, and its later
    samples are left at density 0 unqueried: their transmittance is below ``early_stop_eps`` whatever their density,
    so the samples that pass the early-stop test, and the alphas of those that do, are those of querying every
    sample. One host synchronisation a round (the size of its query) where nerfacc's single query has none."""
    count = t_starts.shape[0]
    if window <= 0 or early_stop_eps <= 0.0:
        return density(t_starts, t_ends, ray_indices), count
    position = torch.arange(count, device=t_starts.device) - first_sample[ray_indices]  # within its ray
    opaque_depth = -math.log(early_stop_eps)
    sigmas = depth = transparent = None
    queried, start, size = 0, 0, window
    while queried < count:
        in_round = (position >= start) & (position < start + size)
        if transparent is not None:
            in_round &= transparent[ray_indices]
        picked = in_round.nonzero().squeeze(-1)
        if picked.shape[0] == 0:  # every ray is opaque or out of samples (a ray's positions are contiguous)
            break
        if picked.shape[0] == count:
            return density(t_starts, t_ends, ray_indices), count
        rays = ray_indices[picked]
        values = density(t_starts[picked], t_ends[picked], rays)
        if sigmas is None:
            sigmas = values.new_zeros(count)
            depth = values.new_zeros(first_sample.shape[0])
        sigmas.index_copy_(0, picked, values)
        depth.index_add_(0, rays, values * (t_ends[picked] - t_starts[picked]))
        transparent = depth * (1.0 - _DEPTH_MARGIN) <= opaque_depth
        queried += picked.shape[0]
        start, size = start + size, size * 2
    return sigmas, queried


def _true_positions(mask: torch.Tensor, count: int) -> torch.Tensor:
    """The positions of the ``count`` true entries of ``mask`` (which has exactly that many), without reading the
    count back from the device."""
    return torch.nonzero_static(mask, size=count).squeeze(-1)
