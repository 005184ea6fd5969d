"""Asset finishing on a known object: face budgets, Chamfer distance, baked texture vs field albedo, GLB/OBJ/PLY
re-imports (trimesh and bpy) upright at the expected size, and bad input refused with nothing overwritten."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from backend.cli import main as iso3d
from backend.finishing.cleanup import clean_surface, close_small_holes
from backend.errors import UserError
from backend.finishing.decimate import FACE_TOLERANCE, decimate
from backend.finishing.pipeline import FinishOptions, finish_field, plan_levels
from backend.finishing.surface import extract_surface
from backend.finishing.texture_bake import bake_albedo
from backend.finishing.uv_unwrap import unwrap
from tests.helpers.fitted_job import RED, SURFACE_THRESHOLD, SnowmanTarget, fit_snowman_field, write_job
from tests.helpers.processes import python, run

SIZE = 2.0  # --size of the exported asset (metres)
TEXTURE = 128  # texels a side: the bake's cost grows with their number (256: 0.8 CPU s of the export's 3 levels)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Small tensors: one thread is as fast on a quiet machine and ~8x faster on a busy 2-core one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fitted():
    return fit_snowman_field()


@pytest.fixture(scope="module")
def job(tmp_path_factory, fitted):
    return write_job(tmp_path_factory.mktemp("finish") / "snowman.job", *fitted)


@pytest.fixture(scope="module")
def exported(job):
    out = job.parent / "finished"
    # a 48-cell grid, not the job's 64 (the generate test below finishes at its job's own resolution): a surface of
    # ~3,200 faces, above every budget here, extracted in 0.9 CPU s instead of 2.3
    code = iso3d(["export", str(job), "--faces", "2000", "--texture", str(TEXTURE), "--lods", "1000,300",
                  "--format", "all", "--size", str(SIZE), "--resolution", "48", "--out", str(out)])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def analytic_surface():
    return clean_surface(extract_surface(SnowmanTarget(), 64, SURFACE_THRESHOLD).to_trimesh())


def chamfer_samples(surface: trimesh.Trimesh, count: int = 3000, dense: int = 200000):
    """(``count`` points on the surface (seed 0), a KD-tree of ``dense`` points on it (seed 1) standing in for it:
    about 0.001 of sampling floor): what surface_chamfer reads of each side, made once per surface."""
    from scipy.spatial import cKDTree

    return (trimesh.sample.sample_surface(surface, count, seed=0)[0],
            cKDTree(trimesh.sample.sample_surface(surface, dense, seed=1)[0]))


@pytest.fixture(scope="module")
def analytic_samples(analytic_surface):
    return chamfer_samples(analytic_surface)  # sampled once for the three budgets below


def surface_chamfer(a, b) -> float:
    """Symmetric mean distance (world units) between two surfaces given by their chamfer_samples: from points on
    each to the dense sample of the other."""
    (points_a, tree_a), (points_b, tree_b) = a, b
    return 0.5 * (tree_b.query(points_a)[0].mean() + tree_a.query(points_b)[0].mean())


def test_cleanup_drops_floaters_and_closes_small_holes_outward(analytic_surface):
    assert analytic_surface.is_watertight and analytic_surface.volume > 0
    floater = trimesh.creation.icosphere(subdivisions=0, radius=0.02)  # 20 faces: 0.3%
    floater.apply_translation([0.8, 0.8, 0.8])
    holed = analytic_surface.copy()
    holed.update_faces(np.arange(len(holed.faces)) != 0)  # a one-triangle hole
    holed.invert()  # and wound inward
    cleaned = clean_surface(trimesh.util.concatenate([holed, floater]), 0.01, 0.1)
    assert cleaned.is_watertight and cleaned.volume > 0
    assert cleaned.bounds[1].max() < 0.7  # the floater is gone
    assert len(close_small_holes(holed, 1e-6).faces) == len(holed.faces)  # larger holes stay open


@pytest.mark.parametrize("budget", [4000, 1000, 200])
def test_decimation_meets_the_face_budget_and_keeps_the_shape(analytic_surface, analytic_samples, budget):
    simplified = decimate(analytic_surface, budget)
    assert abs(len(simplified.faces) - budget) <= FACE_TOLERANCE * budget
    # the object is 0.86 tall; the marching-cubes cell is 0.031
    limit = {4000: 0.003, 1000: 0.005, 200: 0.012}[budget]  # includes ~0.0015 of sampling floor
    distance = surface_chamfer(chamfer_samples(simplified), analytic_samples)
    print(budget, distance)
    assert distance < limit


# slow: a texture bake's values point by point (~2 s); the default run keeps the export test, which bakes and writes
# it
@pytest.mark.slow
def test_baked_texture_matches_the_field_albedo_at_surface_points(fitted):
    field, _ = fitted
    unwrapped = unwrap(decimate(clean_surface(extract_surface(field, 64, SURFACE_THRESHOLD).to_trimesh()), 2000),
                       TEXTURE)
    texture = bake_albedo(field, unwrapped, TEXTURE)
    shape = trimesh.Trimesh(unwrapped.vertices, unwrapped.faces, process=False)
    points, face = trimesh.sample.sample_surface(shape, 3000, seed=1)
    weights = trimesh.triangles.points_to_barycentric(shape.triangles[face], points)
    uv = (unwrapped.uvs[unwrapped.faces[face]] * weights[..., None]).sum(axis=1)
    col = np.clip((uv[:, 0] * TEXTURE).astype(int), 0, TEXTURE - 1)
    row = np.clip(((1.0 - uv[:, 1]) * TEXTURE).astype(int), 0, TEXTURE - 1)
    baked = texture[row, col] / 255.0
    with torch.no_grad():
        truth = field(torch.as_tensor(points, dtype=torch.float32))[1].numpy()
    error = np.abs(baked - truth).mean()
    assert error < 0.02, f"mean |baked - field albedo| = {error:.4f}"
    assert (texture.reshape(-1, 3).sum(axis=1) > 0).all()  # gutters are dilated: no black texels


def test_export_writes_every_format_and_lod_with_a_manifest(exported):
    names = {p.name for p in exported.iterdir()}
    for stem in ("snowman", "snowman_lod1", "snowman_lod2"):
        assert {f"{stem}.glb", f"{stem}.obj", f"{stem}.mtl", f"{stem}.png", f"{stem}.ply"} <= names
    assert not [n for n in names if n.endswith(".partial")]
    manifest = json.loads((exported / "snowman_finish.json").read_text())
    assert [level["face_budget"] for level in manifest["levels"]] == [2000, 1000, 300]
    assert manifest["surface_faces"] > 2000
    for level in manifest["levels"]:
        assert abs(level["faces"] - level["face_budget"]) <= FACE_TOLERANCE * level["face_budget"]


def test_glb_reimports_with_trimesh_textured_upright_and_sized(exported):
    scene = trimesh.load(exported / "snowman.glb")
    (mesh,) = scene.geometry.values()
    assert isinstance(mesh.visual, trimesh.visual.TextureVisuals)
    material = mesh.visual.material
    assert material.baseColorTexture.size == (TEXTURE, TEXTURE) and material.metallicFactor == 0.0
    extent = mesh.bounds[1] - mesh.bounds[0]
    assert abs(extent.max() - SIZE) < 0.01 * SIZE and np.allclose(mesh.bounds.mean(axis=0), 0, atol=0.01 * SIZE)
    assert np.argmax(extent) == 1  # glTF is Y-up: the snowman's height is along Y
    head = mesh.vertices[mesh.vertices[:, 1] > 0.5 * SIZE * 0.5]
    assert len(head) and np.abs(head[:, [0, 2]]).max() < 0.3 * SIZE  # the small head is on top
    colours = mesh.visual.to_color().vertex_colors[:, :3] / 255.0
    right = mesh.vertices[:, 0] > 0.1
    assert np.abs(colours[right].mean(axis=0) - RED).max() < 0.08  # +X stays +X (red)


def test_obj_and_ply_reimport_upright(exported):
    obj = trimesh.load(exported / "snowman.obj", process=False)
    assert isinstance(obj.visual, trimesh.visual.TextureVisuals) and obj.visual.material.image.size[0] == TEXTURE
    assert np.argmax(obj.extents) == 1  # OBJ is Y-up
    ply = trimesh.load(exported / "snowman.ply", process=False)
    assert np.argmax(ply.extents) == 2 and abs(ply.extents.max() - SIZE) < 0.01 * SIZE  # PLY is Z-up, as Blender reads it
    assert ply.visual.vertex_colors[ply.vertices[:, 0] > 0.1, 0].mean() > 200


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="bpy is not installed")
def test_glb_imports_into_blender_upright_textured_at_the_expected_size(exported):
    script = Path(__file__).with_name("blender_import_check.py")  # bpy in a child process, never in this one
    result = run(python(script, exported / "snowman.glb"), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    low, high = np.array(report["bbox_min"]), np.array(report["bbox_max"])
    assert report["objects"] == 1 and report["base_color_textured"] == [True]
    assert [TEXTURE, TEXTURE] in report["images"]
    assert np.argmax(high - low) == 2 and abs((high - low).max() - SIZE) < 0.01 * SIZE  # +Z up, SIZE tall
    assert np.allclose((low + high) / 2, 0, atol=0.01 * SIZE)  # at the origin
    assert report["centroid"][2] < 0  # the big body is at the bottom, the head on top
    assert np.abs(np.array(report["plus_x_colour"]) - RED).max() < 0.08  # the texture maps the right way round


@pytest.mark.parametrize("arguments, message", [
    (["--faces", "0"], "face budget 0"),
    # a 24-cell grid: this refusal comes after the surface is extracted, which at the job's 64 cells costs ~2 s
    (["--faces", "1", "--resolution", "24"], "setting 'faces': a budget of 1 leaves nothing"),
    (["--lods", "2000,-5"], "face budget -5"),
    (["--texture", "1000"], "power of two"),
    (["--texture", "16384"], "power of two"),
    (["--resolution", "4"], "setting 'resolution' must be between 8 and 1024 (got 4)"),  # checked once, up front
])
def test_bad_input_is_one_line_exit_2_and_overwrites_nothing(exported, job, capsys, arguments, message):
    before = {p.name: p.stat().st_mtime_ns for p in exported.iterdir()}
    code = iso3d(["export", str(job), "--texture", "64", "--faces", "500", "--out", str(exported), *arguments])
    error = capsys.readouterr().err.strip()
    assert code == 2 and message in error and len(error.splitlines()) == 1
    assert {p.name: p.stat().st_mtime_ns for p in exported.iterdir()} == before


def test_budgets_fit_the_surface_kept_whole_and_lods_below_the_level_above():
    plan = plan_levels(8412, 20000, (20000, 5000, 5000, 9000, 800))
    assert plan.targets == [8412, 5000, 800] and plan.budgets == [20000, 5000, 800]
    assert plan.notes == [
        "the surface has 8,412 faces, under the 20,000 budget: kept whole",
        "LOD budget 1 (20,000 faces) is not below the level above it (8,412 faces): left out",
        "LOD budget 3 (5,000 faces) is not below the level above it (5,000 faces): left out",
        "LOD budget 4 (9,000 faces) is not below the level above it (5,000 faces): left out",
    ]
    assert plan_levels(8412, 8412, ()).notes == ["the surface has 8,412 faces, exactly the 8,412 budget: kept whole"]
    within = plan_levels(8412, 3000, (1000,))
    assert within.targets == [3000, 1000] and within.notes == []


def test_a_budget_above_a_small_surface_keeps_it_whole(fitted):
    field, _ = fitted
    # a 24-cell grid: a surface of about 2,000 faces, far under the default 20,000 budget
    options = FinishOptions(texture=64, resolution=24, lods=(50_000, 300, 300))
    result = finish_field(field, options, "small", default_threshold=SURFACE_THRESHOLD)
    assert options.faces == 20000 and result.surface_faces < 20000
    main, lod = result.levels
    assert main.faces == result.surface_faces and main.face_budget == 20000  # not one face decimated away
    assert len(result.meshes[0].mesh.faces) == result.surface_faces
    assert lod.name == "small_lod1" and abs(lod.faces - 300) <= max(2, FACE_TOLERANCE * 300)
    assert result.notes[0] == f"the surface has {result.surface_faces:,} faces, under the 20,000 budget: kept whole"
    assert [note.split(" (")[0] for note in result.notes[1:]] == ["LOD budget 1", "LOD budget 3"]
    assert sorted(result.files) == ["small.glb", "small_lod1.glb"]
    with pytest.raises(UserError, match="setting 'lods': a budget of 1 leaves nothing"):
        finish_field(field, FinishOptions(texture=64, resolution=24, lods=(1,)), default_threshold=SURFACE_THRESHOLD)


def test_export_with_a_budget_above_the_surface_says_it_kept_it_whole(job, tmp_path, capsys):
    code = iso3d(["export", str(job), "--faces", "10000000", "--texture", "64", "--resolution", "24",
                  "--quiet", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    manifest = json.loads((tmp_path / "snowman_finish.json").read_text())
    (level,) = manifest["levels"]
    assert code == 0 and level["faces"] == manifest["surface_faces"]
    note = f"the surface has {manifest['surface_faces']:,} faces, under the 10,000,000 budget: kept whole"
    assert manifest["notes"] == [note] and f"note: {note}" in printed


def test_a_folder_without_a_field_is_refused(tmp_path, capsys):
    (tmp_path / "empty.job").mkdir()
    code = iso3d(["export", str(tmp_path / "empty.job"), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "holds no field" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_generate_with_a_face_budget_writes_the_finished_asset(tmp_path):
    out = tmp_path / "thing.glb"
    # a 2-view 24^2 turntable (the preset's: 4 views at 48^2, ~0.5 CPU s): this test checks the finished asset
    code = iso3d(["generate", "examples/example.png", "--model", "tiny", "--device", "cpu", "--preset", "tiny",
                  "--quiet", "--out", str(out), "--steps", "1", "--phases.resolution_before", "24",
                  "--mesh.resolution", "32", "--mesh.density_threshold", "2", "--run.turntable_views", "2",
                  "--run.views_resolution", "24", "--faces", "300", "--texture", "64", "--lods", "100"])
    assert code == 0
    manifest = json.loads((tmp_path / "thing_finish.json").read_text())
    assert [level["name"] for level in manifest["levels"]] == ["thing", "thing_lod1"]
    (mesh,) = trimesh.load(out).geometry.values()
    assert abs(len(mesh.faces) - 300) <= 6 and mesh.visual.material.baseColorTexture.size == (64, 64)
    assert (tmp_path / "thing_lod1.glb").is_file()


# slow: the finish job in-process (~2 s); the default run keeps the service's finish job over a real socket
# (tests/service/test_server.py)
@pytest.mark.slow
def test_the_service_finish_job_streams_the_finished_mesh(tmp_path, fitted):
    from types import SimpleNamespace

    from backend.errors import SettingsError
    from backend.events import Done, MeshUpdate, Progress
    from backend.service.job_kinds import JobRunner, validate_settings
    from backend.service.messages import event_frames
    from blender_addon.core import protocol
    from blender_addon.core.protocol import JOB_KINDS

    assert "finish" in JOB_KINDS
    source = "a" * 16
    write_job(tmp_path / source / "work", *fitted)

    class Store:
        def directory(self, job_id):
            if job_id != source:
                raise KeyError(job_id)
            return tmp_path / job_id

    settings = {"source": source, "faces": 500, "texture": 64, "lods": [200], "size": 1}
    validate_settings("finish", settings)
    for bad in ({"faces": 500}, {**settings, "texture": 100}, {**settings, "lods": [0]}, {**settings, "x": 1}):
        with pytest.raises(SettingsError if "source" not in bad or "x" in bad else Exception):
            validate_settings("finish", bad)
    record = SimpleNamespace(id="b" * 16, kind="finish", settings=settings, step=0)
    events = list(JobRunner(SimpleNamespace(device="cpu"), Store())(record, tmp_path / "job", None, False))
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.step for p in progress] == list(range(1, 11)) and all(p.total == 10 for p in progress)
    assert progress[0].phase == "finish: extract" and progress[-1].phase == "finish: encode"
    mesh, lod, done = [e for e in events if not isinstance(e, Progress)]
    assert isinstance(mesh, MeshUpdate) and mesh.final and abs(len(mesh.faces) - 500) <= 10
    assert isinstance(lod, MeshUpdate) and lod.final and lod.level == 1 and abs(len(lod.faces) - 200) <= 4
    assert mesh.level == 0
    assert isinstance(done, Done) and {"asset.glb", "asset_lod1.glb"} <= set(done.artifacts)
    assert abs(np.ptp(mesh.vertices, axis=0).max() - 1.0) < 0.01  # placement is the full surface's
    for level in (mesh, lod):
        # welded (no seam copies: every vertex position once) with one uv per face corner
        assert level.uvs.shape == (len(level.faces), 3, 2) and level.texture.shape == (64, 64, 3)
        assert len(np.unique(level.vertices, axis=0)) == len(level.vertices)
        # the baked texture under each corner's uv is the albedo at that corner's vertex
        rows = np.clip(((1.0 - level.uvs[..., 1]) * 64).astype(int), 0, 63)
        cols = np.clip((level.uvs[..., 0] * 64).astype(int), 0, 63)
        sampled = level.texture[rows, cols].astype(float)
        assert np.abs(sampled - level.vertex_colors[level.faces].astype(float)).mean() / 255.0 < 0.06
    frames = event_frames("b" * 16, lod)
    message = protocol.decode(frames, "server")
    assert message.get("level") == 1 and [spec["kind"] for spec in message.payload_specs] == ["array"] * 4 + ["png"]
    assert protocol.png_size(message.payloads[4]) == (64, 64)
    missing = SimpleNamespace(id="c" * 16, kind="finish", settings={**settings, "source": "f" * 16}, step=0)
    (failed,) = JobRunner(SimpleNamespace(device="cpu"), Store())(missing, tmp_path / "job2", None, False)
    assert failed.code == "bad_input" and "no job" in failed.message
