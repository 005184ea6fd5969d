"""Surface extraction at a chosen marching-cubes grid and density threshold (backend.nerf.mesh does the work)."""

from __future__ import annotations

from backend.errors import UserError
from backend.nerf.mesh import Mesh, extract_mesh


def extract_surface(field, resolution: int, threshold: float, chunk: int = 262144) -> Mesh:
    """The ``density == threshold`` surface on a ``resolution``^3-cell grid, floaters kept (``cleanup`` drops them).

    ``resolution`` is already checked where it is set (FinishOptions.resolution, the job's mesh.resolution).
    Raises UserError when the field has no surface at that threshold.
    """
    mesh = extract_mesh(field, resolution, threshold, min_component_fraction=0.0, chunk=chunk)
    if mesh.is_empty:
        raise UserError(f"the field has no surface at density {threshold:g}: lower the setting 'threshold'")
    return mesh
