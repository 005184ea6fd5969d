"""Known objects for tests: an analytic field (same interface as RadianceField) and its exact surface."""

from __future__ import annotations

import numpy as np
import torch
import trimesh
from torch import nn

from backend.nerf.presets import GenerateConfig, set_option

SPHERE_CENTRE = (0.15, -0.1, 0.05)  # off-centre so that a mirrored camera convention would show
SPHERE_RADIUS = 0.4


class SphereTarget(nn.Module):
    """A sphere of density ~``peak`` (1/world-unit), red on its +X half and blue on its -X half."""

    def __init__(self, peak: float = 60.0, radius: float = 1.0):
        super().__init__()
        self.radius = radius
        self.peak = peak
        self.register_buffer("centre", torch.tensor(SPHERE_CENTRE))

    def density(self, points: torch.Tensor) -> torch.Tensor:
        distance = (points - self.centre).norm(dim=-1)
        return self.peak * torch.sigmoid((SPHERE_RADIUS - distance) * 60.0)

    def forward(self, points: torch.Tensor, with_normals: bool = False):
        red = (points[:, :1] > self.centre[0]).float()
        albedo = red * torch.tensor([0.9, 0.2, 0.2]) + (1 - red) * torch.tensor([0.2, 0.3, 0.9])
        normals = torch.nn.functional.normalize(points - self.centre, dim=-1) if with_normals else None
        return self.density(points), albedo, normals


def sphere_surface_points(count: int = 4000) -> np.ndarray:
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=SPHERE_RADIUS)
    points, _ = trimesh.sample.sample_surface(mesh, count, seed=0)
    return points + np.asarray(SPHERE_CENTRE)


def chamfer_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric mean nearest-neighbour distance (world units) between point sets [N, 3] and [M, 3]."""
    from scipy.spatial import cKDTree

    return 0.5 * (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def small_config(steps: int = 8, **overrides) -> GenerateConfig:
    """Tiny-model-sized settings for CPU tests."""
    from backend.nerf.presets import tiny

    config = tiny()
    config.run.steps = steps
    config.run.turntable_views = 2
    config.run.views_resolution = 24
    config.phases.resolution_before = config.phases.resolution_after = 24
    config.guidance.latent_resolution_input = 64
    config.renderer.render_step = 0.04
    config.mesh.resolution, config.mesh.preview_resolution = 32, 24
    for key, value in overrides.items():
        set_option(config, key.replace("__", "."), value)
    return config


def coarse_render_config(steps: int = 8, **overrides) -> GenerateConfig:
    """small_config with 16^2 training renders (not 24^2) at half the samples per ray (render_step 0.08, not 0.04),
    for tests of a run's events, checkpoints, resume and failures, which do not depend on what its renders look
    like: the samples are most of a CPU step (measured a step of the tiny model 0.48 -> 0.31 CPU s at half the
    samples, 0.50 -> 0.32 with 16^2 renders on top, on a slower afternoon). Views and meshes keep their sizes."""
    return small_config(steps, **{"renderer__render_step": 0.08, "phases__resolution_before": 16,
                                  "phases__resolution_after": 16, **overrides})
