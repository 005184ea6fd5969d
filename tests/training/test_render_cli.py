"""``iso3d-render`` as a user runs it: real subprocesses, real bpy workers, real files."""

import gzip
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

# bpy in this process: object_files writes its textured GLB with Blender's exporter
pytestmark = [pytest.mark.blender, pytest.mark.integration]
pytest.importorskip("bpy")

from backend.diffusion.cameras import encode_cameras  # noqa: E402
from blender_addon.core.render_plan import (  # noqa: E402
    expected_files,
    is_flagged,
    normalization_transform,
)
from tests.helpers import object_files  # noqa: E402
from tests.helpers.processes import run  # noqa: E402
from tests.helpers.render_cli import SMALL, SMALL_SETTINGS, by_name, cli, run_cli  # noqa: E402
from training.camera_codes import camera_codes, load_record  # noqa: E402
from training.render_inputs import InputError, collect_sources, identify, shard  # noqa: E402

@pytest.fixture(scope="module")
def dataset(objects, tmp_path_factory):
    """One run over good and bad objects with two workers, transparent background (alpha = silhouette)."""
    out = tmp_path_factory.mktemp("render") / "out"
    folder = os.path.dirname(objects["tetra"])
    result = run_cli(folder, "--out", out, "--workers", 2, "--background", "transparent", "--max-file-mb", 0.1, *SMALL)
    ids = by_name(json.loads((out / "manifest.json").read_text())["done"])
    return out, result, ids


def test_good_objects_render_and_bad_ones_fail_with_reasons(dataset):
    out, result, ids = dataset
    assert result.returncode == 1, result.stderr  # 1: some objects failed
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(by_name(manifest["done"])) == ["box", "nomtl", "tetra", "textured", "zup"]
    assert manifest["objects_total"] == 9
    reasons = {name: manifest["failed"][object_id]["reason"] for name, object_id in by_name(manifest["failed"]).items()}
    assert sorted(reasons) == ["empty", "huge", "unreadable", "zero"]
    assert "could not import unreadable.glb" in reasons["unreadable"]
    assert "no mesh objects" in reasons["empty"]
    assert "zero size" in reasons["zero"]
    assert "too large" in reasons["huge"] and "--max-file-mb" in reasons["huge"]
    for object_id in manifest["done"]:
        assert sorted(os.listdir(out / object_id)) == sorted(expected_files(SMALL_SETTINGS))
        image = Image.open(out / object_id / "fixed_000.png")
        assert image.size == (48, 48) and image.mode == "RGBA"
    assert not list((out / ".partial").rglob("*.png"))
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        ["manifest.json", *manifest["done"]])
    flagged = sum(is_flagged(entry["flags"]) for entry in manifest["done"].values())
    assert flagged >= 3  # a missing MTL, a Z-up OBJ and a cropped box at least (test below)
    assert f"rendered 5 ({flagged} flagged), failed 4" in result.stderr


def test_quality_flags_name_missing_textures_a_likely_z_up_file_and_cropped_views(dataset):
    out, _, ids = dataset
    done = json.loads((out / "manifest.json").read_text())["done"]
    flags = {name: done[object_id]["flags"] for name, object_id in ids.items()}
    assert flags["nomtl"]["missing_textures"] == ["nomtl.mtl"]
    assert [name for name in flags if flags[name]["missing_textures"]] == ["nomtl"]
    assert [name for name in flags if flags[name]["likely_z_up"]] == ["zup"]
    # The textured box is normalised to the unit cube: at distance 1.5 and 49.1 degrees its corners leave the frame.
    assert flags["textured"]["outside_frame_fraction"] > 0.0  # with --normalize sphere: 0 (test below)
    record = load_record(str(out / ids["textured"]))
    assert record["quality"] == flags["textured"]
    assert record["normalization"]["faces"] == 12  # triangles
    assert json.loads((out / ids["nomtl"] / "cameras.json").read_text())["normalization"]["faces"] == 12  # 6 quads


def test_texture_is_rendered(dataset):
    out, _, ids = dataset
    pixels = np.concatenate([np.asarray(Image.open(p))[..., :3].reshape(-1, 3).astype(int)
                             for p in sorted((out / ids["textured"]).glob("*.png"))])
    red = (pixels[:, 0] > 100) & (pixels[:, 0] > 3 * pixels[:, 2] + 20)
    blue = (pixels[:, 2] > 100) & (pixels[:, 2] > 3 * pixels[:, 0] + 20)
    assert red.sum() > 50 and blue.sum() > 50


@pytest.mark.parametrize("name", ["tetra", "box"])
def test_json_matrices_project_the_object_onto_its_silhouettes(dataset, name):
    out, _, ids = dataset
    vertices, faces = {"tetra": (object_files.TETRA_VERTICES, object_files.TETRA_FACES),
                       "box": object_files.box_mesh()}[name]
    record = load_record(str(out / ids[name]))
    assert record["normalization"]["scale"] == pytest.approx(1.0 / np.ptp(vertices, axis=0).max())
    mirrored, flipped = [], vertices.copy()
    flipped[:, 0] = vertices[:, 0].min() + vertices[:, 0].max() - vertices[:, 0]  # mirrored about its own centre
    for view in record["views"]:
        alpha = np.asarray(Image.open(out / ids[name] / view["file"]))[..., 3] > 127
        projected = object_files.silhouette_from_record(record, view, vertices, faces)
        assert object_files.iou(alpha, projected) > 0.95, view["file"]
        # A mirrored object (a wrong handedness or azimuth direction) must not fit as well.
        mirrored.append(object_files.iou(alpha, object_files.silhouette_from_record(record, view, flipped, faces)))
    if name == "tetra":
        assert min(mirrored) < 0.85


def test_json_converts_to_the_model_camera_encoding(dataset):
    out, _, ids = dataset
    record = load_record(str(out / ids["tetra"]))
    elevations = [view["elevation_deg"] for view in record["views"]]
    azimuths = [view["azimuth_deg"] for view in record["views"]]
    for encoding in ("isotropic3d", "mvdream"):
        assert torch.equal(camera_codes(record, encoding), encode_cameras(elevations, azimuths, encoding))
    # The stored matrices, translation normalised, are the MVDream camera code of the same angles.
    torch.testing.assert_close(camera_codes(record, "c2w"), encode_cameras(elevations, azimuths, "mvdream"),
                               atol=1e-6, rtol=0)
    assert camera_codes(record, "isotropic3d", view_set="fixed").shape == (4, 16)
    for view in record["views"]:
        assert view["elevation_rad"] == pytest.approx(np.radians(view["elevation_deg"]))
    with pytest.raises(ValueError, match="unknown camera encoding"):
        camera_codes(record, "opencv")


TINY = ["--resolution", "16", "--samples", "1", "--no-denoise", "--fixed-views", "1", "--random-views", "0"]


def test_a_file_with_a_rendered_name_but_other_content_is_a_new_object(objects, tmp_path):
    source = tmp_path / "chair.obj"
    shutil.copy(objects["tetra"], source)
    out = tmp_path / "out"
    first = run_cli(source, "--out", out, *TINY)
    assert first.returncode == 0, first.stderr
    object_files.write_obj(source, *object_files.box_mesh())  # same name, another object
    second = run_cli(source, "--out", out, *TINY)
    assert second.returncode == 0, second.stderr
    assert "0 already done" in second.stderr and "rendered 1" in second.stderr
    done = json.loads((out / "manifest.json").read_text())["done"]
    assert len(done) == 2 and all(object_id.startswith("chair-") for object_id in done)
    scales = sorted(load_record(str(out / object_id))["normalization"]["scale"] for object_id in done)
    assert scales == pytest.approx([0.5, 1.0])  # the box (largest side 2) and the tetrahedron (1)


def source_file_mesh(path: str):
    """Vertices and triangles of an object file in its own coordinates (trimesh applies no axis conversion)."""
    import trimesh

    mesh = trimesh.load(path, force="mesh", process=False)
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces)


@pytest.mark.parametrize("name", ["textured", "zup"])
def test_file_to_world_projects_the_source_file_onto_the_silhouettes(dataset, objects, name):
    """The documented recipe on a Y-up glTF and on a Z-up OBJ read as Y-up (lying on its side, as flagged)."""
    out, _, ids = dataset
    record = load_record(str(out / ids[name]))
    vertices, faces = source_file_mesh(objects[name])
    for view in record["views"]:
        alpha = np.asarray(Image.open(out / ids[name] / view["file"]))[..., 3] > 127
        projected = object_files.silhouette_from_record(record, view, vertices, faces, from_file=True)
        assert object_files.iou(alpha, projected) > 0.95, view["file"]


def test_up_axis_z_sphere_normalisation_and_an_exactly_white_background(objects, tmp_path):
    out = tmp_path / "out"
    # The denoiser on (the default), as the speckled backgrounds came from it.
    result = run_cli(objects["zup"], objects["textured"], "--out", out, "--up-axis", "z", "--normalize", "sphere",
                     "--resolution", 48, "--samples", 4, "--fixed-views", 4, "--random-views", 2, "--workers", 1)
    assert result.returncode == 0, result.stderr
    done = json.loads((out / "manifest.json").read_text())["done"]
    ids = by_name(done)
    assert done[ids["zup"]]["flags"] == {"missing_textures": [], "likely_z_up": False, "outside_frame_fraction": 0.0}
    assert done[ids["textured"]]["flags"]["outside_frame_fraction"] == 0.0  # the sphere fits every view
    record = load_record(str(out / ids["zup"]))
    scale = record["normalization"]["scale"]
    np.testing.assert_allclose(np.asarray(record["normalization"]["file_to_world"])[:3, :3], scale * np.eye(3))
    vertices, faces = source_file_mesh(objects["zup"])
    radius = np.linalg.norm(vertices - (vertices.min(0) + vertices.max(0)) / 2, axis=1).max()
    assert scale == pytest.approx(0.5 / radius)
    for object_id in done:
        for view in load_record(str(out / object_id))["views"]:
            image = np.asarray(Image.open(out / object_id / view["file"]))
            assert image.shape == (48, 48, 3)
            for corner in (image[:6, :6], image[:6, -6:], image[-6:, :6], image[-6:, -6:]):
                assert (corner == 255).all(), view["file"]  # exactly white, no denoiser speckle
            if object_id == ids["textured"]:  # red and blue: never white
                assert (image < 255).any(axis=2).sum() > 100
    # Upright: every non-white pixel of the Z-up tetrahedron lies in its silhouette projected from the file with
    # file_to_world (grown by one pixel for anti-aliased edges; a lit grey face may saturate to white, so the test
    # is containment, not IoU); projected lying on its side (the Y-up reading), most of them do not.
    side_scale, side_offset = normalization_transform(vertices @ object_files.Y_UP_TO_Z_UP.T, "sphere")
    lying = record | {"normalization": {**record["normalization"], "file_to_world": np.r_[
        np.c_[side_scale * object_files.Y_UP_TO_Z_UP, side_offset], [[0, 0, 0, 1]]].tolist()}}
    inside, inside_lying, drawn_total = 0, 0, 0
    for view in record["views"]:
        drawn = (np.asarray(Image.open(out / ids["zup"] / view["file"])) < 255).any(axis=2)
        upright = object_files.grow(object_files.silhouette_from_record(record, view, vertices, faces, from_file=True))
        side = object_files.grow(object_files.silhouette_from_record(lying, view, vertices, faces, from_file=True))
        inside, inside_lying, drawn_total = inside + (drawn & upright).sum(), inside_lying + (drawn & side).sum(), \
            drawn_total + drawn.sum()
    assert drawn_total > 300 and inside / drawn_total > 0.97 and inside_lying / drawn_total < 0.8


def test_objaverse_uids_resolve_through_the_objaverse_cache(objects, tmp_path):
    uid, unknown = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
    cache = tmp_path / "objaverse"
    glb = cache / "hf-objaverse-v1" / "glbs" / "000-000" / f"{uid}.glb"
    glb.parent.mkdir(parents=True)
    shutil.copy(objects["textured"], glb)
    with gzip.open(cache / "hf-objaverse-v1" / "object-paths.json.gz", "wt") as handle:
        json.dump({uid: f"glbs/000-000/{uid}.glb"}, handle)
    uid_list = tmp_path / "uids.txt"
    uid_list.write_text(f"# objaverse objects\n{uid}\n{unknown}\n")
    out = tmp_path / "out"
    result = run_cli(uid_list, "--out", out, "--objaverse-cache", cache, *SMALL)
    assert result.returncode == 1, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["done"]) == [uid]
    assert manifest["failed"][unknown]["reason"] == "unknown Objaverse UID"
    assert (out / uid / "cameras.json").is_file()  # an Objaverse object's id is its UID


def test_objaverse_without_network_or_cache_is_a_one_line_error(tmp_path):
    result = run_cli("0123456789abcdef0123456789abcdef", "--out", tmp_path / "out",
                     "--objaverse-cache", tmp_path / "empty-cache")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("iso3d-render: error: cannot load the Objaverse object list")
    assert "offline?" in lines[-1] and not any("Traceback" in line for line in lines)


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.glb"], "no such file or folder, and not an Objaverse UID: missing.glb"),
        (["notes.md"], "unsupported input notes.md"),
        ([], "no objects given"),
        (["ok.obj", "--resolution", "0"], "invalid render setting resolution"),
        (["ok.obj", "--workers", "0"], "--workers must be at least 1"),
        (["ok.obj", "--shard-index", "3", "--num-shards", "2"], "--shard-index must be in 0..1"),
        (["ok.obj", "--engine", "workbench"], "invalid choice: 'workbench'"),
        (["ok.obj", "--hdri", "moon.exr"], "unknown HDRI(s) moon.exr"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, args, message):
    (tmp_path / "notes.md").write_text("not an object")
    object_files.write_obj(tmp_path / "ok.obj", object_files.TETRA_VERTICES, object_files.TETRA_FACES)
    result = run(cli() + args + ["--out", str(tmp_path / "out")], cwd=tmp_path, timeout=600)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_shards_split_the_sources_without_overlap_and_ids_follow_content(objects, tmp_path):
    sources = collect_sources([os.path.dirname(objects["tetra"])])
    assert [s.source for s in sources] == sorted(s.source for s in sources)
    shards = [shard(sources, k, 3) for k in range(3)]
    assert sorted(sum(shards, []), key=lambda s: s.source) == sources
    assert not set(shards[0]) & set(shards[1])
    # Same file stem in two folders: other content, other ids; same content, one object.
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    shutil.copy(objects["tetra"], tmp_path / "a" / "chair.obj")
    shutil.copy(objects["box"], tmp_path / "b" / "chair.ply")
    shutil.copy(objects["tetra"], tmp_path / "c" / "chair.obj")
    items = identify(collect_sources([str(tmp_path / d) for d in "abc"]), key="settings A")
    assert len(items) == 2 and all(item.object_id.startswith("chair-") for item in items)
    assert items[0].object_id != items[1].object_id
    other_settings = identify(collect_sources([str(tmp_path / "a")]), key="settings B")
    assert other_settings[0].object_id not in {item.object_id for item in items}
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no object files"):
        identify(collect_sources([str(tmp_path / "empty")]), key="")
