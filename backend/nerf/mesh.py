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
from blender_addon.core.atomic_files import write_bytes_atomically

MESH_FORMATS = (".glb", ".obj", ".ply")
# Blender Z-up -> glTF/OBJ Y-up: (x, y, z) -> (x, z, -y).
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


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
def _lattice_densities(field: RadianceField, linear: np.ndarray, first_plane: int, resolution: int,
                       chunk: int) -> np.ndarray:
    """float32 density at corners of the ``resolution``-cell grid over [-radius, radius]^3 given by ``linear``
    indices within the block of x-planes that starts at ``first_plane`` (index = (x - first) * side^2 + y * side +
    z, side = resolution + 1), evaluated ``chunk`` points at a time."""
    device = field_device(field)
    side = resolution + 1
    step = 2.0 * field.radius / resolution
    out = np.empty(len(linear), np.float32)
    for start in range(0, len(linear), chunk):
        index = torch.as_tensor(linear[start:start + chunk], device=device)
        corners = torch.stack([index // (side * side) + first_plane, index // side % side, index % side], dim=1)
        points = corners.to(torch.float32) * step - field.radius
        out[start:start + len(index)] = field.density(points).reshape(-1).float().cpu().numpy()
    return out


@torch.no_grad()
def density_grid(field: RadianceField, resolution: int, chunk: int = 262144) -> np.ndarray:
    """Density at the (resolution+1)^3 cell corners of [-radius, radius]^3, indexed [x, y, z]."""
    return _density_planes(field, resolution, 0, resolution + 1, chunk)


def _density_planes(field: RadianceField, resolution: int, first: int, stop: int, chunk: int) -> np.ndarray:
    """Density at the corners of x-planes ``first`` .. ``stop - 1`` of the grid: [stop - first, R + 1, R + 1]."""
    side = resolution + 1
    grid = np.empty((stop - first, side, side), np.float32)
    flat = grid.reshape(-1)
    for start in range(0, flat.size, chunk):
        linear = np.arange(start, min(start + chunk, flat.size))
        flat[start:start + len(linear)] = _lattice_densities(field, linear, first, resolution, chunk)
    return grid


def _surface_cells(corners: np.ndarray, threshold: float) -> np.ndarray:
    """bool [X-1, Y-1, Z-1]: cells whose 8 corner densities ``corners`` [X, Y, Z] lie on both sides of
    ``threshold``."""
    above = (corners > threshold).astype(np.uint8)
    count = np.zeros(tuple(n - 1 for n in above.shape), np.uint8)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                count += above[dx:dx + count.shape[0], dy:dy + count.shape[1], dz:dz + count.shape[2]]
    return (count > 0) & (count < 8)


def _dilate(mask: np.ndarray) -> np.ndarray:
    """``mask`` grown by one cell along every axis and diagonal (a 3x3x3 cube), separably."""
    for axis in range(3):
        grown = mask.copy()
        index = [slice(None)] * 3
        shifted = [slice(None)] * 3
        index[axis], shifted[axis] = slice(1, None), slice(None, -1)
        grown[tuple(index)] |= mask[tuple(shifted)]
        grown[tuple(shifted)] |= mask[tuple(index)]
        mask = grown
    return mask


def _upsample_plane(values: np.ndarray, factor: int) -> np.ndarray:
    """Corner values [Y, Z] of a grid plane -> [(Y-1)*f+1, (Z-1)*f+1] by bilinear interpolation (corner i of the
    coarse plane is corner i * f of the fine one)."""
    steps = np.arange(factor, dtype=np.float32) / factor
    for axis in (0, 1):
        moved = np.moveaxis(values, axis, 0)
        low, high = moved[:-1], moved[1:]
        fine = (low[:, None] + (high - low)[:, None] * steps[None, :, None]).reshape(-1, moved.shape[1])
        values = np.moveaxis(np.concatenate([fine, moved[-1:]], axis=0), 0, axis)
    return values


def _upsample_into(out: np.ndarray, coarse: np.ndarray, factor: int) -> None:
    """Write the trilinear upsampling of coarse corner values [X, Y, Z] into ``out`` [(X-1)*f+1, ...], one fine
    plane at a time (no temporary larger than two planes)."""
    upper = _upsample_plane(coarse[0], factor)
    for i in range(coarse.shape[0] - 1):
        lower, upper = upper, _upsample_plane(coarse[i + 1], factor)
        for j in range(factor):
            np.multiply(lower, 1.0 - j / factor, out=out[i * factor + j])
            out[i * factor + j] += upper * (j / factor)
    out[-1] = upper


def _corners_of_cells(cells: np.ndarray, factor: int) -> np.ndarray:
    """bool corner mask [X*f+1, Y*f+1, Z*f+1] of the fine grid: the corners of the fine cells inside ``cells``
    [X, Y, Z] (each coarse cell split into f^3 fine cells)."""
    fine_cells = cells.repeat(factor, 0).repeat(factor, 1).repeat(factor, 2)
    corners = np.zeros(tuple(n + 1 for n in fine_cells.shape), bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                corners[dx:dx + fine_cells.shape[0], dy:dy + fine_cells.shape[1], dz:dz + fine_cells.shape[2]] |= \
                    fine_cells
    return corners


_WELD_SCALE = 1e6  # welding keys: vertex positions in units of 1e-6 fine cells


def refined_surface(field: RadianceField, resolution: int, refinement: int, threshold: float,
                    chunk: int = 262144, whole_slabs: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes at an effective ``resolution * refinement`` cells per axis, evaluating the fine grid only
    near the surface. Returns (vertices [V, 3] in fine-grid index units, faces [F, 3]).

    The box is processed in slabs along x. Per slab, a coarse pass samples the density at ``resolution`` and marks
    the cells the surface crosses (corners on both sides of ``threshold``), grown by one cell so that detail which
    pokes out between coarse corners is kept. The slab's fine grid starts as the trilinear interpolation of the
    coarse one (on one side of the threshold wherever the coarse cells are unmarked, so no surface appears there);
    the field is then evaluated at the fine corners of the marked cells only, and marching cubes runs on the slab.
    Consecutive slabs share their boundary plane (carried over, not re-evaluated), so the vertices there coincide
    exactly and are welded. A slab holds at most a quarter of the values of a dense ``resolution`` grid, so the peak
    memory stays below the single-pass extraction at ``resolution``.

    Only the part of a slab that can hold surface is built: the box (in y and z) of its marked cells and one coarse
    cell around them (a fine cell of an unmarked coarse cell next to a marked one has evaluated corners, so it may
    cross). Outside it every fine corner is interpolated within one unmarked coarse cell, on that cell's side of
    the threshold, so the whole slab's marching cubes would find nothing there: the result is the whole slab's,
    for the interpolation and marching cubes of the box alone (bench/mesh_refinement.py: most of the final mesh's
    CPU time went to the slabs' empty parts). ``whole_slabs``: every slab built whole (the reference the boxes are
    tested equal to, tests/nerf/test_coarse_to_fine_mesh.py)."""
    fine_resolution = resolution * refinement
    side = fine_resolution + 1
    # Coarse cells per slab: (b * f + 1) * (R * f + 1)^2 fine values <= (R + 1)^3 / 4, leaving room for the slab's
    # masks and the coarse planes within the dense grid's (R + 1)^3.
    slab = max(1, ((resolution + 1) ** 3 // 4 // side**2 - 1) // refinement)
    coarse_cache: dict[int, np.ndarray] = {}

    def coarse_planes(first: int, stop: int) -> np.ndarray:
        missing = [x for x in range(first, stop) if x not in coarse_cache]
        if missing:
            values = _density_planes(field, resolution, missing[0], missing[-1] + 1, chunk)
            coarse_cache.update({x: values[x - missing[0]] for x in missing})
        for x in [x for x in coarse_cache if x < first]:
            del coarse_cache[x]
        return np.stack([coarse_cache[x] for x in range(first, stop)])

    vertex_blocks, face_blocks, count = [], [], 0
    carried_plane: np.ndarray | None = None  # the previous slab's last fine plane, whole [side, side]
    carried_box: tuple[int, int, int, int] | None = None  # coarse (y0, y1, z0, z1) where it may hold evaluations
    shared: dict[tuple[float, float], int] = {}  # (y, z) -> index of the vertices on the previous slab's last plane
    for x0 in range(0, resolution, slab):
        x1 = min(x0 + slab, resolution)
        lo, hi = max(x0 - 1, 0), min(x1 + 1, resolution)  # coarse cells around the slab, for the dilation
        window = coarse_planes(lo, hi + 1)
        coarse = window[x0 - lo:x1 - lo + 1]  # the slab's coarse corners [x1 - x0 + 1, R + 1, R + 1]
        marked = _dilate(_surface_cells(window, threshold))[x0 - lo:x1 - lo]
        first_plane, first_box = carried_plane, carried_box
        carried_plane = _upsample_plane(coarse[-1], refinement)  # the last plane where nothing is evaluated
        carried_box = None
        boxes = [first_box] if first_box is not None else []  # the first plane's evaluated corners: in the box too
        if marked.any():  # the marked cells and one cell around them
            rows, columns = np.flatnonzero(marked.any(axis=(0, 2))), np.flatnonzero(marked.any(axis=(0, 1)))
            carried_box = (max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, resolution),
                           max(int(columns[0]) - 1, 0), min(int(columns[-1]) + 2, resolution))
            boxes.append(carried_box)
        if whole_slabs:
            boxes = [(0, resolution, 0, resolution)]
        if not boxes:
            shared = {}
            continue
        # the box in coarse cells [y0, y1) x [z0, z1)
        y0, y1 = min(box[0] for box in boxes), max(box[1] for box in boxes)
        z0, z1 = min(box[2] for box in boxes), max(box[3] for box in boxes)
        fy, fz = slice(y0 * refinement, y1 * refinement + 1), slice(z0 * refinement, z1 * refinement + 1)
        grid = np.empty(((x1 - x0) * refinement + 1, fy.stop - fy.start, fz.stop - fz.start), np.float32)
        _upsample_into(grid, coarse[:, y0:y1 + 1, z0:z1 + 1], refinement)
        evaluate = _corners_of_cells(marked[:, y0:y1, z0:z1], refinement)
        if first_plane is not None:
            grid[0] = first_plane[fy, fz]
            evaluate[0] = False
        flat_mask, flat_grid = evaluate.reshape(-1), grid.reshape(-1)
        del evaluate
        for start in range(0, flat_mask.size, chunk):
            local = np.flatnonzero(flat_mask[start:start + chunk]) + start
            if len(local):  # the box's corners as indices into the slab's whole fine planes
                plane, row, column = np.unravel_index(local, grid.shape)
                linear = (plane * side + row + fy.start) * side + column + fz.start
                flat_grid[local] = _lattice_densities(field, linear, x0 * refinement, fine_resolution, chunk)
        carried_plane[fy, fz] = grid[-1]
        vertices, faces = (mcubes.marching_cubes(grid, threshold) if grid.max() > threshold > grid.min()
                           else (np.zeros((0, 3)), np.zeros((0, 3), np.int64)))
        del grid, flat_grid, flat_mask
        vertices[:, 1] += fy.start
        vertices[:, 2] += fz.start
        # Weld the vertices on this slab's first plane to those on the previous slab's last plane: computed from the
        # same corner values, they differ at most by the rounding of the interpolation's direction (~1e-15 cells),
        # so positions rounded to 1e-6 fine cells match.
        index = np.empty(len(vertices), np.int64)
        on_first = vertices[:, 0] == 0.0
        fresh = ~on_first
        keys = np.round(vertices[:, 1:] * _WELD_SCALE).astype(np.int64)
        for position in np.flatnonzero(on_first):
            match = shared.get((keys[position, 0], keys[position, 1]))
            if match is None:
                fresh[position] = True
            else:
                index[position] = match
        index[fresh] = count + np.arange(int(fresh.sum()))
        count += int(fresh.sum())
        vertices[:, 0] += x0 * refinement
        vertex_blocks.append(vertices[fresh])
        face_blocks.append(index[faces.astype(np.int64)])
        last = vertices[:, 0] == x1 * refinement
        shared = dict(zip(map(tuple, keys[last].tolist()), index[last].tolist()))
    if count == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    return np.concatenate(vertex_blocks), np.concatenate(face_blocks)


@torch.no_grad()
def extract_mesh(field: RadianceField, resolution: int, threshold: float, min_component_fraction: float = 0.01,
                 chunk: int = 262144, refinement: int = 1) -> Mesh:
    """The field's surface at ``density == threshold`` (an empty mesh when nothing is that dense).

    ``refinement`` 1: marching cubes on a dense ``resolution`` grid (intermediate meshes: cheap). ``refinement``
    n > 1: coarse-to-fine at an effective ``resolution * n`` (``refined_surface``), the final mesh; its peak memory
    stays below the dense pass at ``resolution``."""
    if refinement > 1:
        vertices, faces = refined_surface(field, resolution, refinement, threshold, chunk)
        return surface_mesh(vertices, faces, resolution * refinement, field, min_component_fraction, chunk)
    return mesh_from_grid(density_grid(field, resolution, chunk), field, threshold, min_component_fraction, chunk)


@torch.no_grad()
def mesh_from_grid(grid: np.ndarray, field: RadianceField, threshold: float, min_component_fraction: float = 0.01,
                   chunk: int = 262144) -> Mesh:
    """``extract_mesh``'s single pass from a ``density_grid`` already taken: the CPU part (marching cubes, clean-up)
    and the vertex colours from ``field`` (the trainer runs this off the step path with a copy of the field taken
    with the grid)."""
    if not (grid.max() > threshold > grid.min()):
        return empty_mesh()
    vertices, faces = mcubes.marching_cubes(grid, threshold)
    return surface_mesh(vertices, faces, grid.shape[0] - 1, field, min_component_fraction, chunk)


@torch.no_grad()
def surface_mesh(vertices: np.ndarray, faces: np.ndarray, resolution: int, field: RadianceField,
                 min_component_fraction: float, chunk: int) -> Mesh:
    """Marching-cubes output (vertices in grid index units of a ``resolution`` grid) -> the Mesh: world units,
    small components dropped, wound outward, vertex colours the field's albedo."""
    if len(faces) == 0:
        return empty_mesh()
    vertices = vertices * (2.0 * field.radius / resolution) - field.radius
    mesh = trimesh.Trimesh(vertices, faces.astype(np.int64), process=True)
    mesh = drop_small_components(mesh, min_component_fraction)
    if signed_volume(mesh.vertices, mesh.faces) < 0:  # density is higher inside: faces must face away from it
        mesh.invert()
    device = field_device(field)
    points = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=device)
    albedo = torch.cat([field(points[i:i + chunk])[1] for i in range(0, points.shape[0], chunk)]) if len(points) \
        else torch.zeros(0, 3)
    colors = (albedo.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
    return Mesh(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int32), colors)


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """The volume a closed mesh encloses, negative when its faces are wound inward: the sum of v0 . (v1 x v2) / 6
    over its triangles (the divergence theorem). trimesh's ``volume`` gives the same number from all its mass
    properties, 5x slower on a 395 k-face final mesh (0.38 against 0.07 s on the CI machine)."""
    corners = np.asarray(vertices, np.float64)[np.asarray(faces)]
    return float(np.einsum("ij,ij->", corners[:, 0], np.cross(corners[:, 1], corners[:, 2])) / 6.0)


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
        out.vertices = np.asarray(mesh.vertices, np.float64) @ Z_UP_TO_Y_UP.T
    data = out.export(file_type=suffix[1:], **({"include_color": True} if suffix == ".obj" else {}))
    write_bytes_atomically(path, data if isinstance(data, bytes) else data.encode("utf-8"))
    return path
