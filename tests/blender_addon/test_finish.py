"""The Finish section end to end: real bpy, a real `iso3d serve --model tiny` subprocess whose job store holds a
generate job with a field fitted to a known object (red on +X, blue on -X), the Finish operator, and
``SESSION.drain`` called directly. The finished object must be the same object with a new mesh (face budget,
UV map), a baked-texture material whose image shows the field's colours on the right side, vertex colours kept,
and LODs where the settings say; re-runs replace everything in place; bad settings change nothing."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.blender, pytest.mark.integration]
bpy = pytest.importorskip("bpy")

from backend.finishing.decimate import FACE_TOLERANCE  # noqa: E402
from blender_addon import scene_sync  # noqa: E402
from blender_addon.session import SESSION  # noqa: E402
from tests.helpers.addon_session import drain_until  # noqa: E402
from tests.helpers.backend import BackendProcess  # noqa: E402
from tests.helpers.fitted_job import BLUE, RED  # noqa: E402
from tests.helpers.paths import REPO_ROOT  # noqa: E402
from tests.helpers.processes import python, run  # noqa: E402


@pytest.fixture(scope="module")
def snowman_backend(tmp_path_factory):
    """(backend, generate job id, streamed mesh): a backend whose store holds a finished generate job."""
    folder = tmp_path_factory.mktemp("finish_backend")
    data, surface = folder / "data", folder / "surface.npz"
    # fitted in a child process: no torch training next to bpy in this one
    fitted = run(python("-m", "tests.helpers.fitted_job", data, surface), cwd=REPO_ROOT, timeout=600)
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    job = fitted.stdout.split()[-1]
    with BackendProcess(data).start() as process:
        yield process, job, dict(np.load(surface))


@pytest.fixture
def generated(registered_addon, snowman_backend, tmp_path):
    """The object Generate left in the scene (its streamed mesh, vertex colours, the job id), active."""
    backend, job, surface = snowman_backend
    registered_addon.backend_address = backend.address
    registered_addon.previews_folder = str(tmp_path / "previews")
    SESSION.disconnect()
    obj = scene_sync.apply_mesh("Snowman", surface["vertices"], surface["faces"], surface["vertex_colors"], job=job)
    obj.location, obj.rotation_euler = (3.0, -1.0, 0.5), (0.0, 0.0, 0.7)
    bpy.context.view_layer.objects.active = obj
    bpy.context.view_layer.update()
    yield obj
    SESSION.disconnect()


def finish(**settings):
    properties = bpy.context.scene.iso3d_finish
    for name, value in settings.items():
        setattr(properties, name, value)
    assert bpy.ops.iso3d.finish() == {"FINISHED"}
    return drain_until(lambda state: state.state in ("done", "failed", "cancelled") and not state.request)


def faces_of(obj) -> int:
    return len(obj.data.polygons)


def within_budget(obj, budget: int) -> bool:
    return abs(faces_of(obj) - budget) <= max(2, FACE_TOLERANCE * budget)


def texture_under_corners(obj) -> tuple[np.ndarray, np.ndarray]:
    """(colour of the baked image under each face corner's uv [L, 3], object-space position of that corner
    [L, 3]), read back through Blender's own data (image pixels: row 0 at the bottom, v up)."""
    mesh = obj.data
    material = obj.active_material
    node = next(n for n in material.node_tree.nodes if n.type == "TEX_IMAGE")
    image = node.image
    width, height = image.size
    pixels = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(pixels)
    pixels = pixels.reshape(height, width, 4)
    uvs = np.empty(len(mesh.loops) * 2, np.float32)
    mesh.uv_layers.active.data.foreach_get("uv", uvs)
    uvs = uvs.reshape(-1, 2)
    columns = np.clip((uvs[:, 0] * width).astype(int), 0, width - 1)
    rows = np.clip((uvs[:, 1] * height).astype(int), 0, height - 1)
    corner_vertex = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("vertex_index", corner_vertex)
    positions = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", positions)
    return pixels[rows, columns, :3], positions.reshape(-1, 3)[corner_vertex]


def test_finish_replaces_the_mesh_and_material_in_place_with_lods_as_children(generated):
    obj, matrix = generated, np.array(generated.matrix_world)
    job = obj["iso3d_job"]
    state = finish(faces=1500, texture="256", lods="600,200", lod_layout="CHILDREN", size=2.0)
    assert state.state == "done", state.last_error
    assert [o.name for o in bpy.data.objects if o.type == "MESH" and o.parent is None] == ["Snowman"]
    assert bpy.data.objects["Snowman"] == obj and within_budget(obj, 1500)
    np.testing.assert_allclose(np.array(obj.matrix_world), matrix, atol=1e-6)  # the artist's transform stays
    assert obj["iso3d_job"] == job and obj["iso3d_finish_job"] == state.job_id  # Re-run works from the same field
    assert obj["iso3d_glb"].endswith("asset.glb")
    positions = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", positions)
    assert np.ptp(positions.reshape(-1, 3), axis=0).max() == pytest.approx(2.0, rel=0.01)  # the chosen size
    # one baked material, the texture packed into the .blend, vertex colours still there
    assert [m.name for m in obj.data.materials] == ["Isotropic3D baked Snowman"]
    image = next(n for n in obj.active_material.node_tree.nodes if n.type == "TEX_IMAGE").image
    assert tuple(image.size) == (256, 256) and image.packed_file is not None
    assert obj.data.uv_layers.active.name == "UVMap" and "iso3d_color" in obj.data.color_attributes
    # The texture under each corner is the field's colour there: red on +X, blue on -X (UV orientation).
    colours, positions = texture_under_corners(obj)
    red, blue = positions[:, 0] > 0.1, positions[:, 0] < -0.1
    assert np.abs(colours[red] - np.array(RED)).mean() < 0.08 and np.abs(colours[blue] - np.array(BLUE)).mean() < 0.08
    # LODs: hidden children sitting on the object, each at its budget, each textured
    bpy.context.view_layer.update()  # world matrices of new children are computed on the next depsgraph update
    lods = scene_sync.lod_objects(obj)
    assert sorted(lods) == [1, 2] and within_budget(lods[1], 600) and within_budget(lods[2], 200)
    for level, lod in lods.items():
        assert lod.name == f"Snowman LOD{level}" and lod.parent == obj and lod.hide_get() and lod.hide_render
        np.testing.assert_allclose(np.array(lod.matrix_world), matrix, atol=1e-5)
        assert lod.data.uv_layers and lod.active_material.name == f"Isotropic3D baked Snowman LOD{level}"


def test_rerun_with_other_settings_replaces_everything_in_place(generated, tmp_path):
    obj = generated
    assert finish(faces=1200, texture="256", lods="500,200", lod_layout="CHILDREN").state == "done"
    state = finish(faces=800, texture="512", lods="300", lod_layout="COLLECTION")
    assert state.state == "done", state.last_error
    assert within_budget(obj, 800) and len(obj.data.materials) == 1
    image = next(n for n in obj.active_material.node_tree.nodes if n.type == "TEX_IMAGE").image
    assert tuple(image.size) == (512, 512)
    assert not [i for i in bpy.data.images if i.name.endswith("(old)")]
    lods = scene_sync.lod_objects(obj)
    assert sorted(lods) == [1] and within_budget(lods[1], 300)  # LOD2 of the first run is gone
    assert "Snowman LOD2" not in bpy.data.objects and "Snowman LOD2" not in bpy.data.meshes
    lod = lods[1]
    bpy.context.view_layer.update()
    assert lod.parent is None and not lod.hide_get() and lod.users_collection[0].name == "Snowman LODs"
    offset = np.array(obj.matrix_world.inverted() @ lod.matrix_world.translation)
    width = np.ptp([v.co.x for v in obj.data.vertices])
    assert offset[0] > width and abs(offset[1]) < 1e-5 and abs(offset[2]) < 1e-5  # beside it along its +X
    # the finished object and its packed texture survive saving and reopening the file
    blend = tmp_path / "finished.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    reopened = bpy.data.objects["Snowman"]
    image = next(n for n in reopened.active_material.node_tree.nodes if n.type == "TEX_IMAGE").image
    assert image.has_data or image.packed_file is not None
    assert tuple(image.size) == (512, 512) and within_budget(reopened, 800)


def test_a_budget_above_the_surface_keeps_it_whole_and_the_report_says_so(generated, capfd):
    obj = generated
    state = finish(faces=5_000_000, texture="256", lods="5000000, 300", lod_layout="CHILDREN")
    assert state.state == "done", state.last_error
    whole, left_out = state.note.split("; ")
    surface_faces = int(whole.split(" faces")[0].removeprefix("the surface has ").replace(",", ""))
    assert whole == f"the surface has {surface_faces:,} faces, under the 5,000,000 budget: kept whole"
    assert left_out.startswith("LOD budget 1 (5,000,000 faces) is not below the level above it")
    assert faces_of(obj) == surface_faces  # kept whole: not one face decimated away
    lods = scene_sync.lod_objects(obj)
    assert sorted(lods) == [1] and within_budget(lods[1], 300)  # the LOD at the surface's size is left out
    # the artist reads it in the status bar / Info log (a report; background Blender prints reports)
    assert f"finish 'Snowman' done ({state.note})" in capfd.readouterr().out


def test_impossible_or_bad_finish_settings_are_reported_and_change_nothing(generated):
    obj = generated
    faces_before = faces_of(obj)
    materials_before = [m.name for m in obj.data.materials]
    state = finish(faces=1, texture="256", lods="")  # one face: nothing of the surface is left
    assert state.state == "failed" and "Setting 'faces': a budget of 1 leaves nothing" in state.last_error
    assert "Traceback" not in state.last_error
    assert faces_of(obj) == faces_before and [m.name for m in obj.data.materials] == materials_before
    bpy.context.scene.iso3d_finish.lods = "1000, lots"
    with pytest.raises(RuntimeError, match="'lots' is not a face count"):
        bpy.ops.iso3d.finish()
    bpy.context.scene.iso3d_finish.lods = ""
    bpy.context.view_layer.objects.active = None
    with pytest.raises(RuntimeError, match="Select an object made by Generate"):
        bpy.ops.iso3d.finish()
    assert faces_of(obj) == faces_before
