"""Albedo texture baking: each texel's surface point (through the UV atlas) queried in the field, then dilated.

Texel (row, col) has its centre at uv = ((col + 0.5) / W, 1 - (row + 0.5) / H) (OBJ/trimesh convention, v up).
Texels no triangle covers take the colour of the nearest covered texel, so bilinear filtering and mipmaps never
mix in background at seams. Rasterisation runs in torch on the field's device.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from backend.finishing.uv_unwrap import UnwrappedMesh
from backend.nerf.mesh import field_device


@torch.no_grad()
def query_albedo(field, points: torch.Tensor, chunk: int = 262144) -> torch.Tensor:
    """Albedo [N, 3] in [0, 1] at points [N, 3] (world units, Z-up)."""
    if len(points) == 0:
        return torch.zeros(0, 3, device=points.device)
    return torch.cat([field(points[i:i + chunk])[1] for i in range(0, len(points), chunk)]).clamp(0, 1)


@torch.no_grad()
def rasterize_surface_points(mesh: UnwrappedMesh, size: int, device: torch.device,
                             faces_per_chunk: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """(points [size*size, 3], covered [size*size] bool): the 3-D point under each texel centre (row-major)."""
    vertices = torch.as_tensor(mesh.vertices, dtype=torch.float32, device=device)
    faces = torch.as_tensor(mesh.faces, dtype=torch.int64, device=device)
    uvs = torch.as_tensor(mesh.uvs, dtype=torch.float32, device=device)
    pixel = torch.stack([uvs[:, 0] * size - 0.5, (1.0 - uvs[:, 1]) * size - 0.5], dim=-1)  # (x=col, y=row)
    points = torch.zeros(size * size, 3, device=device)
    covered = torch.zeros(size * size, dtype=torch.bool, device=device)
    for start in range(0, len(faces), faces_per_chunk):
        face = faces[start:start + faces_per_chunk]
        corner = pixel[face]  # [F, 3, 2]
        low = corner.amin(dim=1).ceil().clamp(0, size - 1).long()
        high = corner.amax(dim=1).floor().clamp(0, size - 1).long()
        extent = (high - low + 1).clamp(min=0)
        counts = extent[:, 0] * extent[:, 1]
        owner = torch.repeat_interleave(torch.arange(len(face), device=device), counts)
        if len(owner) == 0:
            continue
        first = torch.cumsum(counts, 0) - counts
        local = torch.arange(len(owner), device=device) - first[owner]
        col = low[owner, 0] + local % extent[owner, 0]
        row = low[owner, 1] + local // extent[owner, 0]
        a, b, c = corner[owner, 0], corner[owner, 1], corner[owner, 2]
        x, y = col.float(), row.float()
        area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        w_a = ((b[:, 0] - x) * (c[:, 1] - y) - (b[:, 1] - y) * (c[:, 0] - x)) / area
        w_b = ((c[:, 0] - x) * (a[:, 1] - y) - (c[:, 1] - y) * (a[:, 0] - x)) / area
        w_c = 1.0 - w_a - w_b
        inside = (area.abs() > 1e-12) & (w_a >= -1e-4) & (w_b >= -1e-4) & (w_c >= -1e-4)
        weights = torch.stack([w_a, w_b, w_c], dim=-1)[inside]
        corners3d = vertices[face[owner[inside]]]  # [K, 3, 3]
        texel = row[inside] * size + col[inside]
        points[texel] = (weights[..., None] * corners3d).sum(dim=1)
        covered[texel] = True
    return points, covered


def dilate_into_gutters(image: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """``image`` [H, W, C] with every uncovered texel set to its nearest covered texel's value."""
    if covered.all() or not covered.any():
        return image
    _, (rows, cols) = ndimage.distance_transform_edt(~covered, return_indices=True)
    return image[rows, cols]


@torch.no_grad()
def bake_albedo(field, mesh: UnwrappedMesh, size: int) -> np.ndarray:
    """The albedo texture uint8 [size, size, 3] (sRGB-encoded as the field's albedo is, row 0 at the top)."""
    device = field_device(field)
    points, covered = rasterize_surface_points(mesh, size, device)
    colours = torch.zeros(size * size, 3, device=device)
    colours[covered] = query_albedo(field, points[covered])
    image = (colours * 255.0 + 0.5).to(torch.uint8).reshape(size, size, 3).cpu().numpy()
    return dilate_into_gutters(image, covered.reshape(size, size).cpu().numpy())
