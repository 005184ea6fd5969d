"""The Blender extension: manifest, register/unregister, and the "Render training views" operator (real bpy)."""

import json
import os
import tomllib
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.blender
bpy = pytest.importorskip("bpy")

import blender_addon  # noqa: E402
from blender_addon.core.render_plan import RenderSettings, expected_files  # noqa: E402

ADDON_DIR = Path(blender_addon.__file__).parent


def test_manifest_is_a_valid_extension_manifest():
    manifest = tomllib.loads((ADDON_DIR / "blender_manifest.toml").read_text())
    for key in ("schema_version", "id", "name", "tagline", "version", "type", "maintainer", "license",
                "blender_version_min"):
        assert key in manifest, key
    assert manifest["id"] == "isotropic3d" and manifest["type"] == "add-on"
    assert tuple(int(p) for p in manifest["blender_version_min"].split(".")) >= (4, 2, 0)
    assert set(manifest["permissions"]) == {"files", "network"}
    assert all(isinstance(reason, str) and reason for reason in manifest["permissions"].values())
    assert "bl_info" not in (ADDON_DIR / "__init__.py").read_text()


def test_operator_renders_each_selected_mesh_into_the_preferences_folder(registered_addon, tmp_path):
    registered_addon.output_folder = str(tmp_path / "views")
    scene = bpy.context.scene
    properties = scene.iso3d_render
    properties.resolution, properties.samples, properties.denoise = 32, 2, False
    properties.fixed_views, properties.random_views = 2, 1
    assert not bpy.ops.iso3d.render_training_views.poll()  # nothing selected
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(5.0, 0.0, 0.0))
    cube = bpy.context.active_object
    bpy.ops.mesh.primitive_uv_sphere_add(radius=3.0, location=(0.0, 4.0, 1.0))
    sphere = bpy.context.active_object
    cube.select_set(True)
    before = {obj.name: np.array(obj.matrix_world) for obj in bpy.data.objects}
    assert bpy.ops.iso3d.render_training_views() == {"FINISHED"}
    settings = RenderSettings(resolution=32, samples=2, denoise=False, fixed_views=2, random_views=1)
    for obj in (cube, sphere):
        folder = tmp_path / "views" / obj.name
        assert sorted(os.listdir(folder)) == sorted(expected_files(settings))
        record = json.loads((folder / "cameras.json").read_text())
        assert record["intrinsics"]["width"] == 32 and len(record["views"]) == 3
    cube_record = json.loads((tmp_path / "views" / "Cube" / "cameras.json").read_text())
    assert cube_record["normalization"]["scale"] == pytest.approx(0.5)
    np.testing.assert_allclose(cube_record["normalization"]["offset"], [-2.5, 0.0, 0.0], atol=1e-6)
    # The user's file is as it was: same scenes, objects and transforms, no leftover render data.
    assert [s.name for s in bpy.data.scenes] == [scene.name]
    assert {obj.name: np.array(obj.matrix_world) for obj in bpy.data.objects}.keys() == before.keys()
    for name, matrix in before.items():
        np.testing.assert_array_equal(np.array(bpy.data.objects[name].matrix_world), matrix)
    assert len(bpy.data.meshes) == 2 and len(bpy.data.cameras) == 0 and len(bpy.data.worlds) == 0
    # Rendering again replaces the object's folder.
    properties.grouping = "TOGETHER"
    assert bpy.ops.iso3d.render_training_views() == {"FINISHED"}
    assert sorted(os.listdir(tmp_path / "views")) == ["Cube", "Sphere"]


def test_an_output_folder_that_cannot_be_written_is_reported_before_rendering(registered_addon, tmp_path):
    (tmp_path / "a file").write_text("not a folder")
    registered_addon.output_folder = str(tmp_path / "a file" / "views")
    bpy.ops.mesh.primitive_cube_add(size=2.0)
    # an operator's ERROR report is a RuntimeError to a Python caller; in the UI it is the report line
    with pytest.raises(RuntimeError, match=r"Output folder .*a file.views .*: cannot be written there \(Not a directory\)"):
        bpy.ops.iso3d.render_training_views()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a file"]


def test_panel_and_operator_are_registered_in_the_sidebar_tab(registered_addon):
    panel = bpy.types.ISO3D_PT_render_training_views
    assert panel.bl_category == "Isotropic3D" and panel.bl_space_type == "VIEW_3D" and panel.bl_region_type == "UI"
    assert panel.bl_label == "Render training views"
    assert hasattr(bpy.types, "ISO3D_OT_render_training_views")
