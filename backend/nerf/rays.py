"""Camera rays: one ray per pixel centre for pinhole cameras from backend.diffusion.cameras.

Image row 0 is the top of the picture; the camera looks along its local -Z with +Y up (Blender/OpenGL), so a
ray through pixel (row, col) has camera-space direction ((col + 0.5 - W/2) / f, -(row + 0.5 - H/2) / f, -1) with
f = (H / 2) / tan(fovy / 2). Directions are unit length in world space; lengths along them are world units.
"""

from __future__ import annotations

import torch

from backend.device_copies import to_device


def focal_length_pixels(fovy_deg: torch.Tensor, height: int) -> torch.Tensor:
    return (height / 2.0) / torch.tan(torch.deg2rad(torch.as_tensor(fovy_deg, dtype=torch.float32)) / 2.0)


def camera_rays(c2w: torch.Tensor, fovy_deg: torch.Tensor, height: int, width: int):
    """(origins [N, H, W, 3], directions [N, H, W, 3]) for cameras c2w [N, 4, 4] with vertical fov in degrees."""
    return rays_of_focal_lengths(c2w, to_device(focal_length_pixels(fovy_deg, height), c2w.device), height, width)


def rays_of_focal_lengths(c2w: torch.Tensor, focal: torch.Tensor, height: int, width: int):
    """``camera_rays`` with each camera's focal length in pixels ([N], on c2w's device) given: no host work, so it
    can run inside a compiled function."""
    c2w = c2w.float()
    device = c2w.device
    focal = focal.reshape(-1, 1, 1)
    rows = torch.arange(height, device=device, dtype=torch.float32) + 0.5
    cols = torch.arange(width, device=device, dtype=torch.float32) + 0.5
    row, col = torch.meshgrid(rows, cols, indexing="ij")
    x = (col - width / 2.0)[None] / focal
    y = -(row - height / 2.0)[None] / focal
    camera_dirs = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # [N, H, W, 3]
    directions = torch.einsum("nij,nhwj->nhwi", c2w[:, :3, :3], camera_dirs)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    origins = c2w[:, None, None, :3, 3].expand_as(directions)
    return origins, directions
