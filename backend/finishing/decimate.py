"""Decimation to a face budget by quadric error (fast-simplification: Fast-Quadric-Mesh-Simplification)."""

from __future__ import annotations

import fast_simplification
import numpy as np
import trimesh

from backend.errors import UserError

FACE_TOLERANCE = 0.02  # the result has the budget's face count within 2% (the simplifier stops near the target)


def decimate(mesh: trimesh.Trimesh, face_budget: int) -> trimesh.Trimesh:
    """``mesh`` simplified to about ``face_budget`` faces (within FACE_TOLERANCE; never more than the budget
    by more than that). A budget equal to the mesh's face count returns it unchanged."""
    faces = len(mesh.faces)
    if face_budget <= 0 or face_budget > faces:
        raise UserError(f"face budget {face_budget} is out of range: the surface has {faces} faces "
                        f"(give 1 .. {faces})")
    if face_budget == faces:
        return mesh
    vertices, simplified = fast_simplification.simplify(
        np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int32),
        target_reduction=1.0 - face_budget / faces, agg=7)
    out = trimesh.Trimesh(vertices, simplified, process=False)
    out.remove_unreferenced_vertices()
    return out
