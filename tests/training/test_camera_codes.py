"""cameras.json has one reader (training.render_records.load_record): the dataset reader and the camera-code
converter read the same file the same way and give the model the same codes."""

import json

import pytest
import torch

from backend.diffusion.cameras import encode_cameras
from tests.helpers.render_format import TEST_SETTINGS, write_object
from training.camera_codes import camera_codes, load_record
from training.render_records import DatasetError, read_object
from training.render_records import camera_codes as view_camera_codes


@pytest.fixture
def folder(tmp_path):
    return write_object(tmp_path, "chair", hue=1)


@pytest.mark.parametrize("encoding", ["isotropic3d", "mvdream"])
def test_the_record_and_the_dataset_reader_give_the_same_codes(folder, encoding):
    record, obj = load_record(folder), read_object(folder)
    assert load_record(folder / "cameras.json") == record  # the folder or the file
    fixed = camera_codes(record, encoding, view_set="fixed")
    assert fixed.shape == (TEST_SETTINGS.fixed_views, 16)
    assert torch.equal(fixed, view_camera_codes(obj.fixed_views, encoding))
    assert torch.equal(camera_codes(record, encoding, view_set="random"), view_camera_codes(obj.random_views, encoding))


def test_angles_in_radians_read_as_degrees(folder):
    record = load_record(folder)
    for view in record["views"]:
        view["elevation_rad"] = torch.deg2rad(torch.tensor(view.pop("elevation_deg"), dtype=torch.float64)).item()
    (folder / "cameras.json").write_text(json.dumps(record))
    codes = camera_codes(load_record(folder), "mvdream", view_set="fixed")
    obj = read_object(folder)
    expected = encode_cameras([v.elevation_deg for v in obj.fixed_views], [v.azimuth_deg for v in obj.fixed_views],
                              "mvdream")
    torch.testing.assert_close(codes, expected, rtol=0, atol=1e-6)  # degrees -> radians -> degrees rounding


def test_a_record_of_another_format_is_refused_by_both(folder):
    record = load_record(folder)
    (folder / "cameras.json").write_text(json.dumps({**record, "format": "isotropic3d-render/2"}))
    for read in (load_record, read_object):
        with pytest.raises(DatasetError, match="not a supported"):
            read(folder)
