"""``iso3d-render`` as a user runs it: real subprocesses, real bpy workers, real files."""

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# bpy in this process: object_files writes its textured GLB with Blender's exporter
pytestmark = [pytest.mark.blender, pytest.mark.integration]
pytest.importorskip("bpy")

from backend.diffusion.cameras import encode_cameras  # noqa: E402
from blender_addon.render_plan import RenderSettings, expected_files  # noqa: E402
from tests.helpers import object_files  # noqa: E402
from tests.helpers.processes import run, spawn  # noqa: E402
from tests.helpers.waiting import wait_until  # noqa: E402
from training.camera_codes import camera_codes, load_record  # noqa: E402
from training.render_inputs import InputError, collect_items, shard  # noqa: E402

SMALL = ["--resolution", "48", "--samples", "4", "--no-denoise", "--fixed-views", "4", "--random-views", "2"]
SMALL_SETTINGS = RenderSettings(resolution=48, samples=4, denoise=False, fixed_views=4, random_views=2)


def cli():
    script = Path(sys.executable).parent / "iso3d-render"
    return [str(script)] if script.exists() else [sys.executable, "-m", "training.render_cli"]


def run_cli(*args, timeout=600):
    return run(cli() + [str(a) for a in args], timeout=timeout)


def started_objects(out: Path) -> set[str]:
    """Objects with at least one view rendered into their staging folder (``.partial/<shard>/<object>.<pid>.<id>``)."""
    return {folder.name.split(".")[0] for folder in out.glob(".partial/*/*") if any(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    return object_files.write_dataset(str(tmp_path_factory.mktemp("objects")))


@pytest.fixture(scope="module")
def dataset(objects, tmp_path_factory):
    """One run over good and bad objects with two workers, transparent background (alpha = silhouette)."""
    out = tmp_path_factory.mktemp("render") / "out"
    folder = os.path.dirname(objects["tetra"])
    result = run_cli(folder, "--out", out, "--workers", 2, "--background", "transparent", "--max-file-mb", 0.1, *SMALL)
    return out, result


def test_good_objects_render_and_bad_ones_fail_with_reasons(dataset):
    out, result = dataset
    assert result.returncode == 1, result.stderr  # 1: some objects failed
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["done"]) == ["box", "tetra", "textured"]
    reasons = {name: entry["reason"] for name, entry in manifest["failed"].items()}
    assert sorted(reasons) == ["empty", "huge", "unreadable", "zero"]
    assert "could not import unreadable.glb" in reasons["unreadable"]
    assert "no mesh objects" in reasons["empty"]
    assert "zero size" in reasons["zero"]
    assert "too large" in reasons["huge"] and "--max-file-mb" in reasons["huge"]
    for name in manifest["done"]:
        assert sorted(os.listdir(out / name)) == sorted(expected_files(SMALL_SETTINGS))
        image = Image.open(out / name / "fixed_000.png")
        assert image.size == (48, 48) and image.mode == "RGBA"
    assert not list((out / ".partial").rglob("*.png"))
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "box", "manifest.json", "tetra", "textured"]
    assert "rendered 3, failed 4" in result.stderr


def test_texture_is_rendered(dataset):
    out, _ = dataset
    pixels = np.concatenate([np.asarray(Image.open(p))[..., :3].reshape(-1, 3).astype(int)
                             for p in sorted((out / "textured").glob("*.png"))])
    red = (pixels[:, 0] > 100) & (pixels[:, 0] > 3 * pixels[:, 2] + 20)
    blue = (pixels[:, 2] > 100) & (pixels[:, 2] > 3 * pixels[:, 0] + 20)
    assert red.sum() > 50 and blue.sum() > 50


@pytest.mark.parametrize("name", ["tetra", "box"])
def test_json_matrices_project_the_object_onto_its_silhouettes(dataset, name):
    out, _ = dataset
    vertices, faces = {"tetra": (object_files.TETRA_VERTICES, object_files.TETRA_FACES),
                       "box": object_files.box_mesh()}[name]
    record = load_record(str(out / name))
    assert record["normalization"]["scale"] == pytest.approx(1.0 / np.ptp(vertices, axis=0).max())
    mirrored, flipped = [], vertices.copy()
    flipped[:, 0] = vertices[:, 0].min() + vertices[:, 0].max() - vertices[:, 0]  # mirrored about its own centre
    for view in record["views"]:
        alpha = np.asarray(Image.open(out / name / view["file"]))[..., 3] > 127
        projected = object_files.silhouette_from_record(record, view, vertices, faces)
        assert object_files.iou(alpha, projected) > 0.95, view["file"]
        # A mirrored object (a wrong handedness or azimuth direction) must not fit as well.
        mirrored.append(object_files.iou(alpha, object_files.silhouette_from_record(record, view, flipped, faces)))
    if name == "tetra":
        assert min(mirrored) < 0.85


def test_json_converts_to_the_model_camera_encoding(dataset):
    out, _ = dataset
    record = load_record(str(out / "tetra"))
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


def test_kill_and_restart_finishes_without_duplicates_or_truncated_objects(objects, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    count = 12  # enough that a quiet, fast machine cannot finish them all before the kill
    for k in range(count):
        shutil.copy(objects["tetra"], folder / f"object{k:02d}.obj")
    out = tmp_path / "out"
    args = cli() + [str(folder), "--out", str(out), "--workers", "1", "--no-progress", *SMALL]
    with spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
        # killed mid-way through an object: one is finished and the next has views in its staging folder
        wait_until(lambda: (out / "object00" / "cameras.json").exists() and started_objects(out) - {"object00"},
                   600, "object00 finished and the next object started")
        process.kill_group()  # the driver and its workers, as a crash or a preempted job would
    finished = [p for p in out.iterdir() if p.name.startswith("object")]
    assert 1 <= len(finished) < count
    for path in finished:  # everything that looks finished is complete
        assert sorted(os.listdir(path)) == sorted(expected_files(SMALL_SETTINGS))
    first_mtime = (out / "object00" / "cameras.json").stat().st_mtime_ns
    result = run_cli(folder, "--out", out, "--workers", 1, *SMALL)
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} already done" in result.stderr
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("object")) == [f"object{k:02d}" for k in range(count)]
    for k in range(count):
        assert sorted(os.listdir(out / f"object{k:02d}")) == sorted(expected_files(SMALL_SETTINGS))
        json.loads((out / f"object{k:02d}" / "cameras.json").read_text())
    assert (out / "object00" / "cameras.json").stat().st_mtime_ns == first_mtime  # not rendered twice
    assert sorted(json.loads((out / "manifest.json").read_text())["done"]) == [f"object{k:02d}" for k in range(count)]
    assert not list((out / ".partial").rglob("*.*"))
    again = run_cli(folder, "--out", out, *SMALL)  # nothing left to do
    assert again.returncode == 0 and f"{count} already done" in again.stderr
    changed = run_cli(folder, "--out", out, "--resolution", 64)
    assert changed.returncode == 2 and "other settings" in changed.stderr


def test_objects_over_the_time_limit_fail_and_the_worker_is_replaced(objects, tmp_path):
    out = tmp_path / "out"
    started = time.monotonic()
    result = run_cli(objects["tetra"], objects["box"], "--out", out, "--workers", 1, "--time-limit", 2,
                     "--samples", 100000, "--resolution", 128, "--fixed-views", 1, "--random-views", 0)
    assert result.returncode == 1, result.stderr
    failed = json.loads((out / "manifest.json").read_text())["failed"]
    assert sorted(failed) == ["box", "tetra"]
    assert all("timed out" in entry["reason"] for entry in failed.values())
    # two 2 s limits plus two worker starts (bpy imports: up to a minute each on a loaded 2-core machine); the
    # 100000-sample renders themselves would take far longer
    assert time.monotonic() - started < 300
    assert not [p for p in out.iterdir() if not p.name.startswith(".") and p.name != "manifest.json"]


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
    assert (out / uid / "cameras.json").is_file()


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


def test_shards_split_the_sorted_objects_without_overlap(objects, tmp_path):
    items = collect_items([os.path.dirname(objects["tetra"])])
    assert [item.object_id for item in items] == sorted(item.object_id for item in items)
    shards = [shard(items, k, 3) for k in range(3)]
    assert sorted(sum(shards, []), key=lambda i: i.object_id) == items
    assert not set(shards[0]) & set(shards[1])
    # Same file stem in two folders: both kept, with distinct ids.
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    shutil.copy(objects["tetra"], tmp_path / "a" / "chair.obj")
    shutil.copy(objects["tetra"], tmp_path / "b" / "chair.obj")
    ids = [item.object_id for item in collect_items([str(tmp_path / "a"), str(tmp_path / "b")])]
    assert len(set(ids)) == 2 and all(i.startswith("chair-") for i in ids)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no object files"):
        collect_items([str(tmp_path / "empty")])
