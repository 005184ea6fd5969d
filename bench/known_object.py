"""The known object of bench/generate.py: two spheres ray-traced exactly with a step's cameras and shading, and the
chamfer distance of a mesh to its surface (world units)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backend.diffusion.cameras import ViewCameras
from backend.device_copies import to_device
from backend.nerf.rays import focal_length_pixels, rays_of_focal_lengths
from backend.nerf.shading import Lighting, shade


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]  # world units
    radius: float
    albedo: tuple[float, float, float]  # linear RGB in [0, 1]


class TwoSpheres:
    """The known object: a body sphere and a smaller head sphere off the vertical axis (so views differ), each a
    flat albedo. Rendered exactly (ray/sphere intersection, analytic normals) on a white background.

    ``image_loss`` is what a benchmark step adds to the real step (bench/trajectory.py): a real run has no target,
    so it should cost the step as little as it can. On CUDA it is compiled (rays, intersections, shading and the
    loss in a few fused kernels, its backward too): eager it was ~60 small kernels a step and their launches, about
    a tenth of a host-bound ``fast`` step (bench/generate.py's profile, region ``bench.target``)."""

    spheres = (Sphere((0.0, 0.0, -0.12), 0.30, (0.80, 0.35, 0.20)),
               Sphere((0.10, 0.0, 0.27), 0.18, (0.20, 0.45, 0.85)))

    def __init__(self):
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # device -> (centres, albedos)
        self._compiled_loss = None

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The spheres' centres [S, 3] and albedos [S, 3] on ``device``, copied there once."""
        key = str(torch.device(device))
        if key not in self._on_device:
            self._on_device[key] = (torch.tensor([s.center for s in self.spheres], device=device),
                                    torch.tensor([s.albedo for s in self.spheres], device=device))
        return self._on_device[key]

    def _inputs(self, cameras: ViewCameras, size: int, lighting: Lighting, device: torch.device):
        """The per-step inputs on ``device``: c2w [N, 4, 4], focal lengths [N] (pixels), light positions [N, 3] or
        None, the ambient ratio (0-d: a tensor, so a compiled function does not specialise on its value)."""
        c2w = to_device(cameras.c2w.float(), device)
        focal = to_device(focal_length_pixels(cameras.fovy, size), device)
        light = None if lighting.light_positions is None else to_device(lighting.light_positions.float(), device)
        ambient = to_device(torch.tensor(float(lighting.ambient)), device)
        return c2w, focal, light, ambient

    @torch.no_grad()
    def render(self, cameras: ViewCameras, size: int, lighting: Lighting, device: torch.device) -> torch.Tensor:
        """Images [N, 3, size, size] in [0, 1] of the object seen from ``cameras`` under ``lighting``."""
        return _images(*self._inputs(cameras, size, lighting, device), *self._constants(device), lighting.mode,
                       size, self.radii)

    def image_loss(self, renders: torch.Tensor, cameras: ViewCameras, lighting: Lighting) -> torch.Tensor:
        """0.5 * sum((renders - target)^2) / N for renders [N, 3, H, W] (float, in [0, 1]) of ``cameras`` under
        ``lighting``; differentiable in ``renders``."""
        device = renders.device
        function = _image_loss
        if device.type == "cuda":
            if self._compiled_loss is None:
                from backend.compile_cache import use_compile_cache

                use_compile_cache()
                self._compiled_loss = torch.compile(_image_loss, dynamic=False)
            function = self._compiled_loss
        return function(renders, *self._inputs(cameras, renders.shape[-1], lighting, device), *self._constants(device),
                        lighting.mode, self.radii)

    def warm_up(self, device: torch.device, batches: list[tuple[int, int]]) -> None:
        """Compile ``image_loss`` (CUDA) for renders of (views, size) ``batches`` in every shading mode, laid out as
        the renderer gives them, before a run is timed: the target is the benchmark's, so its compiles are not
        the run's."""
        from backend.diffusion.cameras import make_view_cameras
        from backend.nerf.shading import SHADING_MODES

        if torch.device(device).type != "cuda":
            return
        for views, size in batches:
            cameras = make_view_cameras([10.0] * views, [0.0] * views, 3.0, 40.0)
            for mode in SHADING_MODES:
                lights = None if mode == "albedo" else torch.ones(views, 3) * 3.0
                renders = torch.zeros(views, size, size, 3, device=device, requires_grad=True).permute(0, 3, 1, 2)
                self.image_loss(renders, cameras, Lighting(mode, 0.5, lights)).backward()

    @property
    def radii(self) -> tuple[float, ...]:
        return tuple(s.radius for s in self.spheres)

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


def _images(c2w, focal, light_positions, ambient, centres, albedos, mode: str, size: int,
            radii: tuple[float, ...]) -> torch.Tensor:
    """The spheres ray-traced from cameras c2w [N, 4, 4] with focal lengths [N] (pixels): [N, 3, size, size]."""
    origins, directions = rays_of_focal_lengths(c2w, focal, size, size)
    n = c2w.shape[0]
    o, d = origins.reshape(-1, 3), directions.reshape(-1, 3)
    best = torch.full((o.shape[0],), float("inf"), device=o.device)
    normal = torch.zeros_like(o)
    albedo = torch.ones_like(o)
    for index, radius in enumerate(radii):
        center, sphere_albedo = centres[index], albedos[index]
        oc = o - center
        b = (oc * d).sum(-1)
        disc = b * b - (oc * oc).sum(-1) + radius**2
        t = -b - disc.clamp(min=0).sqrt()
        hit = (disc > 0) & (t > 0) & (t < best)
        best = torch.where(hit, t, best)
        point = o + d * t[:, None]
        normal = torch.where(hit[:, None], (point - center) / radius, normal)
        albedo = torch.where(hit[:, None], sphere_albedo, albedo)
    hit = torch.isfinite(best)
    points = o + d * torch.where(hit, best, torch.zeros_like(best))[:, None]
    light = None
    if light_positions is not None:
        light = light_positions[:, None, :].expand(n, size * size, 3).reshape(-1, 3)
    colour = shade(albedo, normal, points, light, Lighting(mode, ambient))
    image = torch.where(hit[:, None], colour, torch.ones_like(colour))
    return image.reshape(n, size, size, 3).permute(0, 3, 1, 2).float()


def _image_loss(renders, c2w, focal, light_positions, ambient, centres, albedos, mode: str,
                radii: tuple[float, ...]) -> torch.Tensor:
    with torch.no_grad():
        target = _images(c2w, focal, light_positions, ambient, centres, albedos, mode, renders.shape[-1], radii)
    return 0.5 * (renders.float() - target).square().sum() / renders.shape[0]
