"""A small plain-torch field whose MLPs switch, and one evaluation of it with normals: its values and parameter
gradients (tests comparing two ways of computing the field: bucketed rows, merged MLPs)."""

from __future__ import annotations

import torch

from backend.nerf.field import RadianceField
from backend.nerf.presets import FieldConfig


def varied_field(seed: int, **settings) -> RadianceField:
    """A torch-encoding, uncompiled field from ``seed`` with its table drawn from U(-1, 1): features large enough
    that the ReLUs switch and the normals vary."""
    torch.manual_seed(seed)
    field = RadianceField(FieldConfig(encoding="torch", log2_hashmap_size=15, compile=False, **settings))
    with torch.no_grad():
        field.encoding.table.uniform_(-1.0, 1.0)
    return field


def values_and_gradients(field: RadianceField, points: torch.Tensor, weights: torch.Tensor) -> list[torch.Tensor]:
    """[density, albedo, normals, each parameter's gradient] of a loss that uses all three outputs."""
    field.zero_grad()
    density, albedo, normals = field(points, with_normals=True)
    (density.sin() + albedo.sum(-1) + (normals * weights).sum(-1) ** 2).sum().backward()
    return [density.detach(), albedo.detach(), normals.detach()] + [p.grad.clone() for p in field.parameters()]
