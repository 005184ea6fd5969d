"""The bpy renderer in this process (real bpy): images, matrices, white background, seeds, failure reasons."""

import json
import os

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.blender
bpy = pytest.importorskip("bpy")

from blender_addon.dataset_render import ObjectRenderError, TrainingViewRenderer  # noqa: E402
from blender_addon.core.render_plan import RenderSettings, expected_files  # noqa: E402
from tests.helpers import object_files  # noqa: E402

SMALL = dict(resolution=40, samples=4, denoise=False, fixed_views=3, random_views=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return object_files.write_dataset(str(tmp_path_factory.mktemp("objects")))


def make_renderer(**changes):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return TrainingViewRenderer(RenderSettings(**{**SMALL, **changes}), bpy.context.scene)


def test_renders_the_expected_files_with_blender_camera_matrices(files, tmp_path):
    renderer = make_renderer()
    loaded = renderer.import_file(files["tetra"])
    progress = list(renderer.render(loaded, "tetra", str(tmp_path)))
    assert progress == [(k, 5) for k in range(1, 6)]
    folder = tmp_path / "tetra"
    assert sorted(os.listdir(folder)) == sorted(expected_files(renderer.settings))
    assert os.listdir(tmp_path / ".partial") == []
    record = json.loads((folder / "cameras.json").read_text())
    # The last view's matrix is the Blender camera's matrix_world as Blender holds it.
    np.testing.assert_allclose(np.array(renderer.camera.matrix_world), record["views"][-1]["c2w"], atol=1e-6)
    assert record["normalization"]["scale"] == pytest.approx(1.0)  # the tetrahedron's largest side is 1 already
    renderer.discard(loaded)
    assert "tetra" not in bpy.data.meshes and len(bpy.data.objects) == 1  # only the camera is left


def test_white_background_and_identical_rerender_for_the_same_seed(files, tmp_path):
    renderer = make_renderer()
    renderer.render_file(files["box"], "box", str(tmp_path / "a"))
    first = np.asarray(Image.open(tmp_path / "a" / "box" / "fixed_001.png"))
    assert first.shape == (40, 40, 3)
    assert (first[0, :] == 255).all() and (first[:, 0] == 255).all()  # pure white border
    assert (first < 200).any()  # the object is there
    renderer = make_renderer()  # a fresh scene, same seed
    renderer.render_file(files["box"], "box", str(tmp_path / "b"))
    renderer = make_renderer(seed=7)
    renderer.render_file(files["box"], "box", str(tmp_path / "c"))
    for name in expected_files(renderer.settings)[:-1]:
        a = np.asarray(Image.open(tmp_path / "a" / "box" / name))
        assert np.array_equal(a, np.asarray(Image.open(tmp_path / "b" / "box" / name))), name
    differs = [not np.array_equal(np.asarray(Image.open(tmp_path / "a" / "box" / n)),
                                  np.asarray(Image.open(tmp_path / "c" / "box" / n)))
               for n in expected_files(renderer.settings)[:-1]]
    assert any(differs)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("unreadable", "could not import unreadable.glb"),
        ("empty", "no mesh objects"),
        ("zero", "zero size"),
    ],
)
def test_unrenderable_objects_fail_with_a_reason_and_leave_nothing(files, tmp_path, name, reason):
    renderer = make_renderer()
    with pytest.raises(ObjectRenderError, match=reason):
        renderer.render_file(files[name], name, str(tmp_path))
    assert not (tmp_path / name).exists()
    assert not list((tmp_path / ".partial").glob("*"))
    assert len(bpy.data.objects) == 1 and len(bpy.data.meshes) == 0
    renderer.render_file(files["tetra"], "tetra", str(tmp_path))  # the scene still works afterwards
    assert (tmp_path / "tetra" / "cameras.json").is_file()


def test_objects_over_the_face_limit_fail(files, tmp_path):
    renderer = make_renderer(max_faces=1000)
    with pytest.raises(ObjectRenderError, match="too large: 3481 faces, more than the limit of 1000"):
        renderer.render_file(files["huge"], "huge", str(tmp_path))
    assert not (tmp_path / "huge").exists()
