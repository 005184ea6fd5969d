"""Samples over the renderer's output: reader, view choice, determinism across process splits, cache."""

from __future__ import annotations

import json

import pytest
import torch

from training.data import RankBatches, SampleSettings, TrainingSamples, check_objects, step_target_views
from training.render_records import RECORD_FILE, DatasetError, camera_codes, scan_render_folder


def test_reader_reads_renderer_records(dataset_dir):
    objects = scan_render_folder(dataset_dir)
    assert [o.object_id for o in objects] == ["object_000", "object_001", "object_002"]
    first = objects[0]
    assert len(first.fixed_views) == 8 and len(first.random_views) == 4 and first.resolution == 64
    assert [v.azimuth_deg for v in first.fixed_views] == [k * 45.0 for k in range(8)]
    assert all(v.elevation_deg == 30.0 for v in first.fixed_views)


def test_reader_tolerates_extra_fields_and_radians_only(tmp_path, dataset_dir):
    import shutil

    folder = tmp_path / "obj"
    shutil.copytree(dataset_dir / "object_000", folder)
    record = json.loads((folder / RECORD_FILE).read_text())
    record["something_new"] = {"a": 1}
    for view in record["views"]:
        del view["elevation_deg"], view["azimuth_deg"]
        view["future_field"] = 3
    (folder / RECORD_FILE).write_text(json.dumps(record))
    (obj,) = scan_render_folder(tmp_path)
    assert obj.fixed_views[2].azimuth_deg == pytest.approx(90.0)


def test_multiview_targets_are_orthogonal_and_branches_mix(dataset_dir):
    objects = scan_render_folder(dataset_dir)
    settings = SampleSettings(seed=5)
    samples = TrainingSamples(objects, settings, check_objects(objects, settings))
    views = [step_target_views(settings, step) for step in range(200)]
    assert set(views) == {1, 4} and 0.55 < views.count(4) / 200 < 0.85
    step = views.index(4)
    for keys in RankBatches(settings, 3, 1, 0, 1, step, step + 1):
        for key in keys:
            sample = samples[key]
            assert sample["targets"].shape == (4, 3, 64, 64) and sample["input"].shape == (3, 64, 64)
            assert sample["noise"].shape == (4, 4, 8, 8) and sample["posterior_noise"].shape == (5, 4, 8, 8)
            obj = objects[samples.object_index(key)]
            azimuths = [obj.fixed_views[i].azimuth_deg for i in sample["target_indices"].tolist()]
            assert [(a - azimuths[0]) % 360 for a in azimuths] == [0.0, 90.0, 180.0, 270.0]
            assert torch.equal(sample["cameras"], camera_codes([obj.fixed_views[i] for i in sample["target_indices"]],
                                                               "isotropic3d"))


def test_samples_of_a_step_do_not_depend_on_the_process_split(dataset_dir):
    objects = scan_render_folder(dataset_dir)
    settings = SampleSettings(seed=1)
    one = [k for keys in RankBatches(settings, 4, 1, 0, 1, 0, 3) for k in keys]
    split = [k for rank in range(2) for keys in RankBatches(settings, 1, 2, rank, 2, 0, 3) for k in keys]
    assert sorted(one, key=lambda k: (k.step, k.index)) == sorted(split, key=lambda k: (k.step, k.index))
    samples = TrainingSamples(objects, settings, (64, 64))
    a, b = samples[one[5]], samples[one[5]]
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_cache_matches_on_the_fly_encoding(dataset_dir, stage1_checkpoint, dataset_cache):
    from backend.models.multiview_model import load_checkpoint
    from training.batches import encode_batch
    from training.cache_command import precompute_cache
    from training.data import collate_samples

    cache = dataset_cache
    assert len(list(cache.glob("*.safetensors"))) == 3
    assert precompute_cache(dataset_dir, stage1_checkpoint, cache, tiny=True, device="cpu") == 0  # resumable
    objects = scan_render_folder(dataset_dir)
    settings = SampleSettings(seed=2, multiview_probability=1.0)
    keys = next(iter(RankBatches(settings, 2, 1, 0, 1, 0, 1)))
    model = load_checkpoint(stage1_checkpoint)
    on_the_fly = encode_batch(model, collate_samples([TrainingSamples(objects, settings, (64, 64))[k] for k in keys]),
                              torch.device("cpu"))
    cached = encode_batch(model, collate_samples([TrainingSamples(objects, settings, (64, 64), cache_dir=cache)[k]
                                                  for k in keys]), torch.device("cpu"))
    for name in on_the_fly:
        assert torch.allclose(on_the_fly[name], cached[name], atol=1e-5), name


def test_cache_of_other_weights_is_refused(dataset_dir, dataset_cache):
    from backend.models.multiview_model import build_tiny_model
    from training.data import cache_fingerprints, check_cache

    objects = scan_render_folder(dataset_dir)
    with pytest.raises(DatasetError, match="other weights"):
        check_cache(objects, dataset_cache, cache_fingerprints(build_tiny_model(seed=7)))


def test_empty_and_half_rendered_folders_are_refused(tmp_path, dataset_dir):
    with pytest.raises(DatasetError, match="no rendered objects"):
        scan_render_folder(tmp_path)
    (tmp_path / ".partial" / "object_9.123.abcd").mkdir(parents=True)
    (tmp_path / ".partial" / "object_9.123.abcd" / "fixed_000.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="interrupted"):
        scan_render_folder(tmp_path)
