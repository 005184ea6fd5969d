"""Shading of the field's samples during SDS (threestudio ``diffuse-with-point-light`` with soft shading).

Before ``albedo_only_until`` (a fraction of the run) renders show the plain albedo. Afterwards each step draws one
mode for the whole batch: albedo with probability ``albedo_probability``, else textureless or diffuse (50/50), lit
by one point light per view with ambient ``1 - r`` and diffuse ``r``, r ~ U(0, 1) per step:
``colour = albedo * (ambient + r * max(0, n . l))`` (albedo = 1 for textureless). Colours are linear in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from backend.nerf.presets import ShadingConfig

SHADING_MODES = ("albedo", "textureless", "diffuse")


@dataclass(frozen=True)
class Lighting:
    """One step's shading: ``mode``, ambient ratio, and light positions [N views, 3] in world units."""

    mode: str
    ambient: float
    light_positions: torch.Tensor | None = None

    @property
    def needs_normals(self) -> bool:
        return self.mode != "albedo"


ALBEDO = Lighting("albedo", 1.0)


class PointLightShading:
    def __init__(self, config: ShadingConfig, total_steps: int):
        self.config = config
        self.total_steps = total_steps
        self.albedo_only = True

    def update_step(self, step: int) -> None:
        self.albedo_only = step < self.config.albedo_only_until * self.total_steps

    def sample(self, camera_positions: torch.Tensor, views_per_object: int, generator: torch.Generator) -> Lighting:
        """This step's lighting for cameras at positions [N, 3] (object-major, ``views_per_object`` each)."""
        if self.albedo_only:
            return ALBEDO
        draw = torch.rand(2, generator=generator).tolist()
        if draw[0] < self.config.albedo_probability:
            return ALBEDO
        mode = "textureless" if draw[1] < self.config.textureless_probability else "diffuse"
        ratio = torch.rand(1, generator=generator).item()  # diffuse share r; ambient 1 - r
        objects = camera_positions.shape[0] // views_per_object
        jitter = torch.randn(objects, 3, generator=generator).repeat_interleave(views_per_object, dim=0)
        low, high = self.config.light_distance_range
        distance = torch.rand(objects, generator=generator) * (high - low) + low
        direction = F.normalize(camera_positions.cpu().float() + jitter, dim=-1)
        positions = direction * distance.repeat_interleave(views_per_object)[:, None]
        return Lighting(mode, 1.0 - ratio, positions.to(camera_positions.device))


def shade(albedo: torch.Tensor, normals: torch.Tensor | None, points: torch.Tensor,
          light_positions: torch.Tensor | None, lighting: Lighting) -> torch.Tensor:
    """Colours [S, 3] of samples; ``light_positions`` [S, 3] gives each sample its view's light."""
    if lighting.mode == "albedo":
        return albedo
    to_light = F.normalize(light_positions - points, dim=-1)
    diffuse = (normals * to_light).sum(dim=-1, keepdim=True).clamp(min=0.0) * (1.0 - lighting.ambient)
    light = lighting.ambient + diffuse
    if lighting.mode == "textureless":
        return light.expand(-1, 3)
    return albedo.clamp(0.0, 1.0) * light
