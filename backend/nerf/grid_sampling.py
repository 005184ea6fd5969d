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

On CUDA the march can run on a side stream (``MarchStream``): its rays and traversal read only the cameras and the
occupancy grid, not the field, so they need not queue behind the previous step's backward pass. On the one stream,
the traversal's count readback waited for that whole backward (~7 ms a 256² step on an H200 with a fast host), and
then the GPU idled while the host queued the density filter; on the side stream the host gets its count as soon as
the traversal has run beside the backward, and queues the filter behind the backward, so the GPU has it waiting.

Lengths along rays are world units.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import nerfacc
import torch
from nerfacc.grid import traverse_grids
from nerfacc.volrend import render_transmittance_from_density

from backend.profiling import host_wait

# (t_starts [S], t_ends [S], ray_indices [S]) -> density [S] (post-activation), as nerfacc's sigma_fn
DensityFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# Whether a CUDA renderer marches on a side stream (``MarchStream``); bench/variants.py's ``march_on_main_stream``
# turns it off (the way until 2026-12-04).
MARCH_ON_SIDE_STREAM = True


class MarchStream:
    """A side CUDA stream for the march (the rays and nerfacc's traversal), ordered against the main stream by hand.

    - The march reads the occupancy grid, which the main stream writes (its updates, a loaded checkpoint): after each
      such write the owner calls ``grid_written`` and the march waits for that point of the main stream only.
    - Rays made on the main stream are waited for (``main_inputs``); rays made within ``active()`` are not.
    - ``hand_over(tensors)``: the main stream waits for the march, and the march's tensors are marked as used by it
      (``record_stream``), so the allocator does not give their memory to a later march while the main stream may
      still read them (a backward pass queued behind them, for instance).

    The side stream has high priority: when the GPU has room, its blocks go first, so the count comes back early.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device, priority=-1)
        self._grid_ready: torch.cuda.Event | None = None

    def grid_written(self) -> None:
        """The main stream has just queued a write to the grid: later marches wait for it."""
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        self._grid_ready = event

    def main_inputs(self) -> None:
        """The next march reads tensors the main stream made: it waits for everything queued there so far."""
        self.stream.wait_stream(torch.cuda.current_stream(self.device))

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Within: work is queued on the side stream, after the grid's latest write."""
        if self._grid_ready is not None:
            self.stream.wait_event(self._grid_ready)
        with torch.cuda.stream(self.stream):
            yield

    def hand_over(self, *tensors: torch.Tensor | None) -> None:
        """The main stream waits for the side stream's work so far and may use ``tensors`` (made there)."""
        main = torch.cuda.current_stream(self.device)
        main.wait_stream(self.stream)
        for tensor in tensors:
            if tensor is not None and tensor.device.type == "cuda":
                tensor.record_stream(main)


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
                    alpha_threshold: float = 0.0, early_stop_eps: float = 1e-4,
                    stream: MarchStream | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """``OccGridEstimator.sampling(origins, directions, sigma_fn=density, near_plane=0, far_plane=1e10,
    render_step_size=render_step, stratified=stratified, alpha_thre=alpha_threshold, early_stop_eps=early_stop_eps,
    cone_angle=0)``: ray indices [S], t_starts [S], t_ends [S] of the visible samples, and how many samples the
    march gave through occupied cells (a host int: the density was queried at each of them).

    ``stream``: the march runs on that side stream (the caller has ordered the rays: made there, or
    ``main_inputs``); the density filter and everything after it on the current stream."""
    if stream is None:
        ray_indices, t_starts, t_ends, packed_info = march_occupied(grid, origins, directions, render_step,
                                                                    stratified)
    else:
        with stream.active():
            ray_indices, t_starts, t_ends, packed_info = march_occupied(grid, origins, directions, render_step,
                                                                        stratified)
        stream.hand_over(ray_indices, t_starts, t_ends, packed_info)
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
