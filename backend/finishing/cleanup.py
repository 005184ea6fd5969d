"""Clean-up of an extracted surface: floaters removed, small holes closed, normals consistent and outward."""

from __future__ import annotations

import numpy as np
import trimesh

from backend.nerf.mesh import drop_small_components


def clean_surface(mesh: trimesh.Trimesh, min_component_fraction: float = 0.01,
                  max_hole_perimeter: float = 0.1) -> trimesh.Trimesh:
    """Drop components under ``min_component_fraction`` of the faces, close boundary loops whose perimeter is at
    most ``max_hole_perimeter`` (world units) with a fan around their centroid, then make the winding consistent
    with normals pointing outward (positive volume per closed body)."""
    mesh = drop_small_components(mesh, min_component_fraction)
    mesh = close_small_holes(mesh, max_hole_perimeter)
    trimesh.repair.fix_normals(mesh, multibody=True)
    return mesh


def boundary_loops(mesh: trimesh.Trimesh) -> list[np.ndarray]:
    """Closed loops of boundary edges as vertex index arrays, in the direction of the faces' winding."""
    single = trimesh.grouping.group_rows(mesh.edges_sorted, require_count=1)
    if len(single) == 0:
        return []
    directed = mesh.edges[single]
    following: dict[int, int] = {}
    for start, end in directed.tolist():
        if start in following:  # a non-manifold boundary vertex: such loops are left open
            following[start] = -1
        else:
            following[start] = end
    loops, seen = [], set()
    for start in following:
        if start in seen:
            continue
        loop, vertex = [], start
        while vertex not in seen and following.get(vertex, -1) >= 0:
            seen.add(vertex)
            loop.append(vertex)
            vertex = following[vertex]
        if vertex == start and len(loop) >= 3:
            loops.append(np.array(loop))
    return loops


def close_small_holes(mesh: trimesh.Trimesh, max_perimeter: float) -> trimesh.Trimesh:
    """``mesh`` with every boundary loop of perimeter <= ``max_perimeter`` closed by a centroid fan."""
    if max_perimeter <= 0:
        return mesh
    vertices, faces = [np.asarray(mesh.vertices)], [np.asarray(mesh.faces)]
    count = len(mesh.vertices)
    for loop in boundary_loops(mesh):
        points = mesh.vertices[loop]
        if np.linalg.norm(points - np.roll(points, -1, axis=0), axis=1).sum() > max_perimeter:
            continue
        vertices.append(points.mean(axis=0, keepdims=True))
        # boundary edge a->b lies on a face wound a->b; the patch face beside it runs b->a
        faces.append(np.stack([np.roll(loop, -1), loop, np.full(len(loop), count)], axis=1))
        count += 1
    if len(faces) == 1:
        return mesh
    return trimesh.Trimesh(np.concatenate(vertices), np.concatenate(faces), process=False)
