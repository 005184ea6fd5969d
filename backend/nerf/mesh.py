"""Mesh extraction from the field and mesh files.

Marching cubes (PyMCubes) on the density sampled at cell corners of a grid over [-radius, radius]^3; the surface
is where density equals ``threshold`` (1/world-unit). Faces are wound counter-clockwise seen from outside,
floating components smaller than a fraction of the faces are dropped, vertex colours are the field's albedo.
Vertices are in Blender's Z-up world (world units). GLB and OBJ files are written Y-up, as those formats specify
(Blender's importers turn them back to Z-up); PLY keeps Z-up (Blender's PLY importer reads Z as up).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mcubes
import numpy as np
import torch
import trimesh

from backend.nerf.field import RadianceField
from blender_addon.atomic_files import write_bytes_atomically

MESH_FORMATS = (".glb", ".obj", ".ply")
# Blender Z-up -> glTF/OBJ Y-up: (x, y, z) -> (x, z, -y).
_Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


@dataclass
class Mesh:
    """vertices float32 [V, 3] (Z-up), faces int32 [F, 3] (CCW from outside), vertex_colors uint8 [V, 3]."""

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray

    @property
    def is_empty(self) -> bool:
        return len(self.faces) == 0

    def to_trimesh(self) -> trimesh.Trimesh:
        colors = np.concatenate([self.vertex_colors, np.full((len(self.vertices), 1), 255, np.uint8)], axis=1)
        return trimesh.Trimesh(self.vertices, self.faces, vertex_colors=colors, process=False)


def empty_mesh() -> Mesh:
    return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros((0, 3), np.uint8))


@torch.no_grad()
def density_grid(field: RadianceField, resolution: int, chunk: int = 262144) -> np.ndarray:
    """Density at the (resolution+1)^3 cell corners of [-radius, radius]^3, indexed [x, y, z]."""
    device = field_device(field)
    axis = torch.linspace(-field.radius, field.radius, resolution + 1, device=device)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    values = torch.cat([field.density(points[i:i + chunk]) for i in range(0, points.shape[0], chunk)])
    return values.reshape(resolution + 1, resolution + 1, resolution + 1).float().cpu().numpy()


@torch.no_grad()
def extract_mesh(field: RadianceField, resolution: int, threshold: float, min_component_fraction: float = 0.01,
                 chunk: int = 262144) -> Mesh:
    """The field's surface at ``density == threshold`` (an empty mesh when nothing is that dense)."""
    grid = density_grid(field, resolution, chunk)
    if not (grid.max() > threshold > grid.min()):
        return empty_mesh()
    vertices, faces = mcubes.marching_cubes(grid, threshold)
    if len(faces) == 0:
        return empty_mesh()
    vertices = vertices * (2.0 * field.radius / resolution) - field.radius
    mesh = trimesh.Trimesh(vertices, faces.astype(np.int64), process=True)
    mesh = drop_small_components(mesh, min_component_fraction)
    if mesh.volume < 0:  # density is higher inside: faces must face away from it
        mesh.invert()
    device = field_device(field)
    points = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=device)
    albedo = torch.cat([field(points[i:i + chunk])[1] for i in range(0, points.shape[0], chunk)]) if len(points) \
        else torch.zeros(0, 3)
    colors = (albedo.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
    return Mesh(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int32), colors)


def field_device(field: torch.nn.Module) -> torch.device:
    """The device of a field's parameters (or buffers; the CPU for a field with neither)."""
    tensor = next(field.parameters(), None)
    tensor = tensor if tensor is not None else next(field.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def drop_small_components(mesh: trimesh.Trimesh, min_fraction: float) -> trimesh.Trimesh:
    """``mesh`` without connected components of fewer than ``min_fraction`` of its faces."""
    if min_fraction <= 0 or len(mesh.faces) == 0:
        return mesh
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    counts = np.bincount(labels)
    keep = counts[labels] >= min_fraction * len(mesh.faces)
    if keep.all():
        return mesh
    mesh = mesh.copy()
    mesh.update_faces(keep)
    mesh.remove_unreferenced_vertices()
    return mesh


def export_mesh(mesh: Mesh, path: str | Path) -> Path:
    """Write ``mesh`` as GLB, OBJ or PLY (by suffix), atomically (a partial file never replaces a good one)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_FORMATS:
        raise ValueError(f"cannot write {path.name}: mesh formats are {', '.join(MESH_FORMATS)}")
    out = mesh.to_trimesh()
    if suffix in (".glb", ".obj"):
        out.vertices = np.asarray(mesh.vertices, np.float64) @ _Z_UP_TO_Y_UP.T
    data = out.export(file_type=suffix[1:], **({"include_color": True} if suffix == ".obj" else {}))
    write_bytes_atomically(path, data if isinstance(data, bytes) else data.encode("utf-8"))
    return path
