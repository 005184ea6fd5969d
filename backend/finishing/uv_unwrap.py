"""UV unwrap with xatlas: charts packed into one atlas with a gutter of texels between them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
import xatlas


@dataclass
class UnwrappedMesh:
    """vertices float32 [V, 3] (Z-up; seam vertices duplicated), faces int32 [F, 3], uvs float32 [V, 2] in [0, 1]
    with v pointing up (OBJ convention: texel row = (1 - v) * height); source_vertex int [V]: each vertex's index
    in the mesh that was unwrapped (seam copies share one), so the welded mesh is ``source_vertex[faces]``."""

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    source_vertex: np.ndarray | None = None

    def corner_uvs(self) -> np.ndarray:
        """float32 [F, 3, 2]: the uv of each face corner (what Blender's per-corner UV maps hold)."""
        return self.uvs[self.faces]


def unwrap(mesh: trimesh.Trimesh, texture_size: int, padding_texels: int = 2) -> UnwrappedMesh:
    """xatlas charts of ``mesh`` packed for a ``texture_size``^2 texture with ``padding_texels`` between charts."""
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.uint32))
    chart_options = xatlas.ChartOptions()
    pack_options = xatlas.PackOptions()
    pack_options.resolution = texture_size
    pack_options.padding = padding_texels
    pack_options.bilinear = True
    atlas.generate(chart_options, pack_options)
    if atlas.atlas_count != 1:  # uvs of several atlas pages would overlap in one texture
        raise RuntimeError(f"xatlas packed the charts into {atlas.atlas_count} pages instead of one")
    vertex_map, faces, uvs = atlas[0]
    return UnwrappedMesh(np.asarray(mesh.vertices, np.float32)[vertex_map], faces.astype(np.int32),
                         uvs.astype(np.float32), vertex_map.astype(np.int64))
