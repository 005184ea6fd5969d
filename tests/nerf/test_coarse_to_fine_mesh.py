"""Coarse-to-fine final meshes on analytic fields (a sphere and a thin shell): closer to the true surface than the
single pass at the same grid, with no more working memory, the fine grid evaluated only near the surface."""

from __future__ import annotations

import tracemalloc

import mcubes
import numpy as np
import pytest
import torch
import trimesh

from backend.nerf.mesh import density_grid, extract_mesh, refined_surface
from tests.helpers.targets import SPHERE_CENTRE, SPHERE_RADIUS, SphereTarget

THRESHOLD = 30.0  # half of SphereTarget's peak: the surface is where the sigmoid is 1/2
RESOLUTION = 48  # the coarse grid: a cell is 2/48 = 0.042 world units


class ThinShell(SphereTarget):
    """A hollow sphere 0.03 world units thick (less than one coarse cell) around SPHERE_RADIUS."""

    half_width = 0.015

    def density(self, points: torch.Tensor) -> torch.Tensor:
        distance = (points - self.centre).norm(dim=-1)
        return self.peak * torch.sigmoid((self.half_width - (distance - SPHERE_RADIUS).abs()) * 200.0)


def sphere_error(vertices: np.ndarray) -> np.ndarray:
    return np.abs(np.linalg.norm(vertices - np.asarray(SPHERE_CENTRE), axis=1) - SPHERE_RADIUS)


def shell_error(vertices: np.ndarray) -> np.ndarray:
    distance = np.linalg.norm(vertices - np.asarray(SPHERE_CENTRE), axis=1)
    inner, outer = SPHERE_RADIUS - ThinShell.half_width, SPHERE_RADIUS + ThinShell.half_width
    return np.minimum(np.abs(distance - inner), np.abs(distance - outer))


class CountingField(torch.nn.Module):
    """Wraps a field and counts the points its density is evaluated at."""

    def __init__(self, field):
        super().__init__()
        self.field, self.radius, self.evaluated = field, field.radius, 0

    def density(self, points):
        self.evaluated += points.shape[0]
        return self.field.density(points)

    def forward(self, points, with_normals=False):
        return self.field(points, with_normals)


def working_memory(function) -> int:
    """Peak bytes ``function`` allocates beyond what its result keeps (tracemalloc sees numpy's buffers, where both
    extractions keep their grids; the field's per-chunk torch temporaries are the same chunk size in both). The
    result is left out: a finer mesh has ~4x the faces by design."""
    tracemalloc.start()
    try:
        result = function()
        current, peak = tracemalloc.get_traced_memory()
        del result
        return peak - current
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("field, error", [(SphereTarget(), sphere_error), (ThinShell(), shell_error)],
                         ids=["sphere", "thin shell"])
def test_refined_mesh_follows_the_surface_closer_at_no_more_memory(field, error):
    single = extract_mesh(field, RESOLUTION, THRESHOLD, 0.0)
    refined = extract_mesh(field, RESOLUTION, THRESHOLD, 0.0, refinement=2)
    for mesh in (single, refined):
        shape = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
        assert shape.is_watertight and shape.volume > 0
    # Marching cubes' vertices sit on grid edges, interpolated linearly in a steep sigmoid: halving the cell
    # shrinks that error about 4x (measured 6x on both fields); 2x leaves room for the field's details.
    assert error(refined.vertices).mean() < error(single.vertices).mean() / 2
    assert error(refined.vertices).max() < error(single.vertices).max() / 2
    # The refined mesh is the dense fine grid's mesh (the fine grid agrees with it wherever there is surface) ...
    dense_fine = extract_mesh(field, 2 * RESOLUTION, THRESHOLD, 0.0)
    assert len(refined.faces) == len(dense_fine.faces)
    np.testing.assert_allclose(np.sort(refined.vertices, axis=0), np.sort(dense_fine.vertices, axis=0), atol=1e-6)
    # ... for a fraction of its field evaluations (coarse grid + fine corners near the surface) ...
    counting = CountingField(field)
    refined_surface(counting, RESOLUTION, 2, THRESHOLD)
    assert counting.evaluated < 0.5 * (2 * RESOLUTION + 1) ** 3
    # ... and with no more working memory than today's single pass at the coarse grid.
    single_pass = working_memory(lambda: mcubes.marching_cubes(density_grid(field, RESOLUTION), THRESHOLD))
    coarse_to_fine = working_memory(lambda: refined_surface(field, RESOLUTION, 2, THRESHOLD))
    assert coarse_to_fine <= single_pass, (coarse_to_fine, single_pass)


def test_refinement_three_welds_every_slab_boundary():
    vertices, faces = refined_surface(SphereTarget(), 32, 3, THRESHOLD)
    shape = trimesh.Trimesh(vertices, faces, process=False)
    assert shape.is_watertight  # the slabs' shared planes are welded: no open edge anywhere
    assert sphere_error(vertices * (2.0 / 96) - 1.0).max() < 2.0 / 96  # within one fine cell of the surface


def test_an_empty_field_gives_an_empty_refined_mesh():
    assert extract_mesh(SphereTarget(peak=1.0), 16, THRESHOLD, refinement=2).is_empty


class Speckles(torch.nn.Module):
    """SphereTarget's sphere and a speck (a quarter of a fine cell wide) at half the fine-grid corners that are not
    coarse corners in a shell around it: detail the coarse pass cannot see, which shows wherever the fine corners are
    evaluated: at the edges of the region near the surface, where the boxes of ``refined_surface`` end."""

    def __init__(self, resolution: int, refinement: int, seed: int):
        super().__init__()
        self.radius, self.fine, self.side = 1.0, 2.0 / (resolution * refinement), resolution * refinement + 1
        corners = np.indices((self.side,) * 3).reshape(3, -1).T
        distance = np.linalg.norm(corners * self.fine - 1.0 - np.asarray(SPHERE_CENTRE), axis=1)
        speck = ((distance > SPHERE_RADIUS + 0.05) & (distance < SPHERE_RADIUS + 0.4)
                 & np.any(corners % refinement != 0, axis=1) & (np.random.default_rng(seed).random(len(corners)) < 0.5))
        self.speck = torch.as_tensor(speck.reshape((self.side,) * 3))
        self.sphere = SphereTarget()

    def density(self, points: torch.Tensor) -> torch.Tensor:
        corner = torch.round((points + 1.0) / self.fine).long().clamp(0, self.side - 1)
        offset = (points - (corner.float() * self.fine - 1.0)).norm(dim=-1)
        speck = self.speck[corner[:, 0], corner[:, 1], corner[:, 2]]
        return self.sphere.density(points) + speck * 60.0 * torch.exp(-(offset / (0.25 * self.fine)) ** 2)

    def forward(self, points, with_normals=False):
        return self.density(points), torch.full((points.shape[0], 3), 0.5), None


@pytest.mark.parametrize("resolution, refinement, seed", [(16, 2, 0), (16, 3, 1), (12, 4, 2)])
def test_boxes_give_the_whole_slabs_mesh(resolution, refinement, seed):
    """Only the box of each slab that can hold surface is built (its marked cells, one coarse cell around them,
    and where the slab's first plane carries evaluated values); the mesh is the one of the whole slabs. The
    specks make both margins matter: without the ring of one cell, or without the carried plane's box, faces
    are lost and the mesh is open (checked when this test was written: 1-8% of the faces). The same points are
    evaluated in other batches, which could move float32 densities by a unit in the last place: 1e-5 cells."""
    field = Speckles(resolution, refinement, seed)
    boxed = refined_surface(field, resolution, refinement, THRESHOLD, chunk=4096)
    whole = refined_surface(field, resolution, refinement, THRESHOLD, chunk=4096, whole_slabs=True)
    sphere_only = refined_surface(SphereTarget(), resolution, refinement, THRESHOLD)
    assert len(whole[1]) > 2 * len(sphere_only[1])  # the specks show: the test has detail to lose
    assert len(boxed[1]) == len(whole[1]) and len(boxed[0]) == len(whole[0])
    np.testing.assert_allclose(np.sort(boxed[0], axis=0), np.sort(whole[0], axis=0), atol=1e-5)
    assert trimesh.Trimesh(*boxed, process=False).is_watertight


def test_signed_volume_is_trimeshs_and_turns_with_the_winding():
    """backend.nerf.mesh.signed_volume (which the final mesh's winding is decided by) equals trimesh's volume, and
    is negative for the same mesh wound inward."""
    from backend.nerf.mesh import signed_volume

    vertices, faces = refined_surface(SphereTarget(), 24, 2, THRESHOLD)
    shape = trimesh.Trimesh(vertices, faces, process=True)
    assert abs(shape.volume) > 1.0  # in fine-grid units: a sphere of radius ~10 cells
    assert signed_volume(shape.vertices, shape.faces) == pytest.approx(shape.volume, rel=1e-12)
    assert signed_volume(shape.vertices, shape.faces[:, ::-1]) == pytest.approx(-shape.volume, rel=1e-12)
