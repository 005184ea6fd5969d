"""The known object of bench/generate.py: two spheres ray-traced exactly with a step's cameras and shading, and the
chamfer distance of a mesh to its surface (world units)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backend.diffusion.cameras import ViewCameras
from backend.device_copies import to_device
from backend.nerf.rays import camera_rays
from backend.nerf.shading import Lighting, shade


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]  # world units
    radius: float
    albedo: tuple[float, float, float]  # linear RGB in [0, 1]


class TwoSpheres:
    """The known object: a body sphere and a smaller head sphere off the vertical axis (so views differ), each a
    flat albedo. Rendered exactly (ray/sphere intersection, analytic normals) on a white background."""

    spheres = (Sphere((0.0, 0.0, -0.12), 0.30, (0.80, 0.35, 0.20)),
               Sphere((0.10, 0.0, 0.27), 0.18, (0.20, 0.45, 0.85)))

    def __init__(self):
        self._on_device: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # device -> (centre, albedo)s

    def _constants(self, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each sphere's centre and albedo on ``device``, copied there once (a benchmark step's target render is
        not part of a real run's step: it should cost the step as little as it can)."""
        key = str(torch.device(device))
        if key not in self._on_device:
            self._on_device[key] = [(torch.tensor(s.center, device=device), torch.tensor(s.albedo, device=device))
                                    for s in self.spheres]
        return self._on_device[key]

    @torch.no_grad()
    def render(self, cameras: ViewCameras, size: int, lighting: Lighting, device: torch.device) -> torch.Tensor:
        """Images [N, 3, size, size] in [0, 1] of the object seen from ``cameras`` under ``lighting``."""
        origins, directions = camera_rays(to_device(cameras.c2w.float(), device), cameras.fovy, size, size)
        n = len(cameras)
        o, d = origins.reshape(-1, 3), directions.reshape(-1, 3)
        best = torch.full((o.shape[0],), float("inf"), device=device)
        normal = torch.zeros_like(o)
        albedo = torch.ones_like(o)
        for sphere, (center, sphere_albedo) in zip(self.spheres, self._constants(device)):
            oc = o - center
            b = (oc * d).sum(-1)
            disc = b * b - (oc * oc).sum(-1) + sphere.radius**2
            t = -b - disc.clamp(min=0).sqrt()
            hit = (disc > 0) & (t > 0) & (t < best)
            best = torch.where(hit, t, best)
            point = o + d * t[:, None]
            normal = torch.where(hit[:, None], (point - center) / sphere.radius, normal)
            albedo = torch.where(hit[:, None], sphere_albedo, albedo)
        hit = torch.isfinite(best)
        points = o + d * torch.where(hit, best, torch.zeros_like(best))[:, None]
        light = None
        if lighting.light_positions is not None:
            light = to_device(lighting.light_positions, device)[:, None, :].expand(n, size * size, 3).reshape(-1, 3)
        colour = shade(albedo, normal, points, light, lighting)
        image = torch.where(hit[:, None], colour, torch.ones_like(colour))
        return image.reshape(n, size, size, 3).permute(0, 3, 1, 2).float()

    def surface_points(self, count: int, seed: int = 0) -> np.ndarray:
        """Points [~count, 3] uniformly on the union's outer surface (each sphere's part outside the other)."""
        rng = np.random.default_rng(seed)
        areas = np.array([s.radius**2 for s in self.spheres])
        parts = []
        for sphere, share in zip(self.spheres, areas / areas.sum()):
            direction = rng.normal(size=(int(count * share), 3))
            points = np.array(sphere.center) + sphere.radius * direction / np.linalg.norm(direction, axis=1,
                                                                                          keepdims=True)
            for other in self.spheres:
                if other is not sphere:
                    points = points[np.linalg.norm(points - np.array(other.center), axis=1) >= other.radius]
            parts.append(points)
        return np.concatenate(parts)


def chamfer_distance(vertices: np.ndarray, faces: np.ndarray, reference: np.ndarray, count: int = 50000) -> float:
    """Symmetric mean (L1) chamfer distance in world units between a mesh's surface (area-weighted samples) and
    reference points: (mean nearest distance mesh->reference + reference->mesh) / 2."""
    import trimesh
    from scipy.spatial import cKDTree

    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    samples, _ = trimesh.sample.sample_surface(mesh, count, seed=0)
    to_reference = cKDTree(reference).query(samples)[0].mean()
    to_mesh = cKDTree(samples).query(reference)[0].mean()
    return float((to_reference + to_mesh) / 2.0)
