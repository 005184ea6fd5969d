"""What the renderer relies on from nerfacc's occupancy grid (pinned here so an upgrade that changes it fails loudly).

The renderer decides the grid's update cadence itself and calls the public ``update_every_n_steps`` with ``n=1``;
the threestudio reference calls the private ``_update`` for the same effect. This test holds: the public call
updates on every step with n=1, takes the keyword arguments the renderer passes, marks the cells of an object
occupied and the empty ones free, and refuses to run outside training mode."""

import inspect

import nerfacc
import pytest
import torch

RENDERER_KEYWORDS = {"step", "occ_eval_fn", "occ_thre", "ema_decay", "warmup_steps", "n"}


def sphere_grid():
    grid = nerfacc.OccGridEstimator(roi_aabb=[-1, -1, -1, 1, 1, 1], resolution=16, levels=1)
    grid.train()
    return grid


def sphere_occupancy(points: torch.Tensor) -> torch.Tensor:
    """Occupancy 1 inside a sphere of radius 0.5, 0 outside: [N, 3] -> [N, 1]."""
    return (points.norm(dim=-1, keepdim=True) < 0.5).float()


def test_the_update_takes_the_renderer_keywords():
    parameters = inspect.signature(nerfacc.OccGridEstimator.update_every_n_steps).parameters
    assert RENDERER_KEYWORDS <= set(parameters), f"nerfacc {nerfacc.__version__} changed update_every_n_steps"


def test_every_step_updates_and_the_object_is_occupied():
    grid = sphere_grid()
    for step in (1, 2, 3):  # n=1: no step is skipped (with n=16, steps 1-3 would not update at all)
        grid.update_every_n_steps(step=step, occ_eval_fn=sphere_occupancy, occ_thre=0.01, ema_decay=0.95,
                                  warmup_steps=256, n=1)
    binaries = grid.binaries.reshape(16, 16, 16)
    centre, corner = binaries[7:9, 7:9, 7:9], binaries[0, 0, 0]
    assert centre.all() and not corner
    # the sphere covers ~6.5% of the box: the occupied share of cells is near that (cell sampling jitter: within 2x)
    assert 0.03 < binaries.float().mean().item() < 0.13


def test_outside_training_mode_the_update_refuses():
    grid = sphere_grid()
    grid.eval()
    with pytest.raises(RuntimeError):
        grid.update_every_n_steps(step=0, occ_eval_fn=sphere_occupancy, n=1)
