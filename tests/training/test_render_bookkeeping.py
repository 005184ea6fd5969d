"""The render run's bookkeeping without Blender: staging locks, the whole-folder check, shard manifests merged
and reported by ``iso3d-render merge`` / ``status`` (real files, real processes), crop-free normalisation."""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from blender_addon.core.render_plan import (
    RenderSettings,
    expected_files,
    normalization_transform,
    outside_frame_fraction,
    plan_object,
    verify_object_folder,
)
from blender_addon.core.render_staging import PublishError, StagingFolder, remove_abandoned
from training.render_manifest import Manifest

from tests.helpers.processes import python, run
from tests.helpers.render_format import write_object

SETTINGS = RenderSettings(resolution=64, fixed_views=8, random_views=4, samples=1)


def cli():
    script = Path(sys.executable).parent / "iso3d-render"
    return [str(script)] if script.exists() else [sys.executable, "-m", "training.render_cli"]


@pytest.mark.integration
def test_a_staging_folder_of_a_live_process_is_kept_and_a_dead_ones_removed(tmp_path):
    root = tmp_path / "staging"
    mine = StagingFolder(str(root), "chair-0123")
    (Path(mine.path) / "fixed_000.png").write_bytes(b"partial")
    # Another process that owned a folder and died (its lock released by the kernel on exit).
    code = ("import sys; from blender_addon.core.render_staging import StagingFolder; "
            "s = StagingFolder(sys.argv[1], 'table-4567'); open(s.path + '/fixed_000.png', 'w').write('x')")
    assert run(python("-c", code, root), timeout=600).returncode == 0
    assert len([p for p in root.iterdir() if p.name.startswith("table")]) == 2  # folder + lock left behind
    removed, live = remove_abandoned(str(root))
    assert (removed, live) == (1, 1)
    assert sorted(p.name for p in root.iterdir()) == sorted([Path(mine.path).name, Path(mine.lock_path).name])
    assert Path(mine.lock_path).read_text().split()[0] == str(os.getpid())
    mine.close()
    assert list(root.iterdir()) == []


def test_cleaning_up_while_other_workers_make_and_publish_folders_never_fails_or_takes_a_live_one(tmp_path):
    """Two render workers share a staging root: one runs remove_abandoned (as each worker does before an object)
    while the other makes, fills and publishes folders. Names listed by the first vanish under it (published,
    cleaned up), and a lock being made must never look abandoned. Found on a loaded machine: the cleaner crashed
    with FileNotFoundError on a folder the other worker had just published, failing that worker's object."""
    import threading

    root, out = tmp_path / "staging", tmp_path / "out"
    out.mkdir()
    count, errors, lost = 300, [], []

    def publisher():
        try:
            for k in range(count):
                with StagingFolder(str(root), f"object{k:03d}") as staging:
                    (Path(staging.path) / "fixed_000.png").write_bytes(b"x")
                    try:
                        staging.publish(str(out / f"object{k:03d}"), lambda path: None)
                    except PublishError as error:  # the cleaner took a live folder
                        lost.append(str(error))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(error))

    thread = threading.Thread(target=publisher)
    thread.start()
    cleanups = 0
    while thread.is_alive():
        remove_abandoned(str(root))  # must not raise while the other worker renames folders away
        cleanups += 1
    thread.join()
    assert not errors and not lost, (errors, lost)
    assert cleanups > 0
    assert sorted(p.name for p in out.iterdir()) == [f"object{k:03d}" for k in range(count)]
    assert all((out / f"object{k:03d}" / "fixed_000.png").read_bytes() == b"x" for k in range(count))
    assert list(root.iterdir()) == []  # every lock and folder cleaned up


def test_publish_refuses_an_incomplete_folder_and_renames_a_whole_one(tmp_path):
    whole = write_object(tmp_path / "rendered", "chair", hue=1, settings=SETTINGS)
    check = lambda path: verify_object_folder(path, SETTINGS, "chair")  # noqa: E731
    with StagingFolder(str(tmp_path / "staging"), "chair") as staging:
        for name in expected_files(SETTINGS):
            shutil.copy(whole / name, Path(staging.path) / name)
        os.unlink(Path(staging.path) / "random_003.png")
        with pytest.raises(PublishError, match="1 of 13 files missing, e.g. random_003.png"):
            staging.publish(str(tmp_path / "out" / "chair"), check)
        shutil.copy(whole / "random_003.png", Path(staging.path) / "random_003.png")
        png = (whole / "fixed_000.png").read_bytes()
        (Path(staging.path) / "fixed_000.png").write_bytes(png[: len(png) // 2])  # cut mid-write
        with pytest.raises(PublishError, match="fixed_000.png is not a complete PNG"):
            staging.publish(str(tmp_path / "out" / "chair"), check)
        shutil.copy(whole / "fixed_000.png", Path(staging.path) / "fixed_000.png")
        (tmp_path / "out").mkdir()
        staging.publish(str(tmp_path / "out" / "chair"), check)
    assert verify_object_folder(str(tmp_path / "out" / "chair"), SETTINGS, "chair") is None
    assert list((tmp_path / "staging").iterdir()) == []
    assert "belongs to object 'chair'" in verify_object_folder(str(tmp_path / "out" / "chair"), SETTINGS, "table")


def write_shard(out: Path, index: int, count: int, total: int, done: dict, failed: dict, settings=None):
    manifest = Manifest(str(out / f"manifest-shard-{index:05d}-of-{count:05d}.json"), settings or {"resolution": 64})
    manifest.objects_total = total
    for object_id, (finished_at, flags) in done.items():
        manifest.mark_done(object_id, f"/data/{object_id}.glb", 10.0, flags)
        manifest.done[object_id]["finished_at"] = finished_at
    for object_id, reason in failed.items():
        manifest.mark_failed(object_id, f"/data/{object_id}.glb", reason)
    manifest.save()


@pytest.mark.integration
def test_merge_and_status_report_all_shards(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    now = time.time()
    clean = {"missing_textures": [], "likely_z_up": False, "outside_frame_fraction": 0.0}
    write_shard(out, 0, 2, 10, {"a": (now - 1800, clean), "b": (now - 1200, {**clean, "likely_z_up": True})},
                {"c": "could not import c.glb"})
    write_shard(out, 1, 2, 10, {"d": (now - 600, clean), "e": (now - 0.5, {**clean, "missing_textures": ["x.png"]})},
                {})
    rendering = StagingFolder(str(out / ".partial" / "shard-00001-of-00002"), "f")  # a live worker's object
    try:
        result = run(cli() + ["status", str(out), "--json"], timeout=600)
    finally:
        rendering.close()
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["rendering"] == 1
    assert (figures["objects_total"], figures["done"], figures["failed"], figures["flagged"], figures["remaining"]) \
        == (20, 4, 1, 2, 15)
    # 3 intervals between 4 finishes spread over 1799.5 s: 6.0 objects/hour; 15 remaining -> 2.5 hours.
    assert figures["objects_per_hour"] == pytest.approx(3 / 1799.5 * 3600, rel=1e-3)
    assert figures["eta_seconds"] == pytest.approx(15 / figures["objects_per_hour"] * 3600, rel=1e-6)
    text = run(cli() + ["status", str(out)], timeout=600)
    assert "remaining  15" in text.stdout and "throughput 6.0 objects/hour" in text.stdout
    merged_run = run(cli() + ["merge", str(out)], timeout=600)
    assert merged_run.returncode == 0, merged_run.stderr
    merged = json.loads((out / "manifest-merged.json").read_text())
    assert sorted(merged["done"]) == ["a", "b", "d", "e"] and list(merged["failed"]) == ["c"]
    assert merged["flagged"] == ["b", "e"] and merged["totals"]["render_seconds"] == 40.0
    assert len(merged["shards"]) == 2
    # Shards rendered with other settings cannot be merged: one line, exit 2.
    write_shard(out, 1, 2, 10, {}, {}, settings={"resolution": 128})
    refused = run(cli() + ["merge", str(out)], timeout=600)
    assert refused.returncode == 2 and "other settings" in refused.stderr and "Traceback" not in refused.stderr
    missing = run(cli() + ["status", str(tmp_path / "nothing")], timeout=600)
    assert missing.returncode == 2 and "is not a folder" in missing.stderr


def test_sphere_normalisation_keeps_every_view_in_frame_where_the_unit_box_crops():
    cube = np.array([[x, y, z] for x in (0.0, 2.0) for y in (0.0, 2.0) for z in (0.0, 2.0)])
    settings = RenderSettings()  # distance 1.5, 49.1 degrees: the paper's camera
    plan = plan_object(settings, "cube", ["forest.exr"])
    for mode, cropped in (("box", True), ("sphere", False)):
        scale, offset = normalization_transform(cube, mode)
        fraction = outside_frame_fraction(cube * scale + offset, settings, plan)
        assert (fraction > 0.0) == cropped, mode
    scale, _ = normalization_transform(cube, "sphere")
    assert scale == pytest.approx(0.5 / np.sqrt(3.0))  # the cube's half-diagonal maps to 0.5


def test_file_digests_are_remembered_until_the_file_changes(tmp_path):
    from training.render_inputs import Source, content_id, identify

    chair = tmp_path / "chair.obj"
    chair.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    cache = tmp_path / "digests.json"
    [first] = identify([Source(str(chair))], "key", digest_cache=str(cache))
    assert first.object_id == content_id(str(chair), "key")
    remembered = json.loads(cache.read_text())
    assert len(remembered) == 1
    # The remembered digest is used as long as path, size and modification time are the same...
    json.dump({name: "0" * 64 for name in remembered}, cache.open("w"))
    [cached] = identify([Source(str(chair))], "key", digest_cache=str(cache))
    assert cached.object_id == content_id(str(chair), "key", digest="0" * 64) != first.object_id
    # ...and a changed file is hashed again.
    chair.write_text("v 0 0 0\nv 2 0 0\nv 0 1 0\nf 1 2 3\n")
    os.utime(chair, ns=(time.time_ns(), time.time_ns() + 1))
    [changed] = identify([Source(str(chair))], "key", digest_cache=str(cache))
    assert changed.object_id == content_id(str(chair), "key") not in (first.object_id, cached.object_id)
