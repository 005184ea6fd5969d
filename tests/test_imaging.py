"""Input images: white compositing, squaring, model input range, and clear refusals of bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.imaging import (
    ImageInputError,
    decode_image,
    image_to_tensor,
    load_image,
    save_views_grid,
    tensor_to_uint8,
)


def test_transparent_pixels_become_white_and_range_is_minus_one_to_one(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[16:48, 16:48] = (255, 0, 0, 255)  # opaque red square on a transparent background
    path = tmp_path / "red.png"
    Image.fromarray(rgba, "RGBA").save(path)
    tensor = image_to_tensor(load_image(path))
    assert tensor.shape == (1, 3, 256, 256)
    assert tensor.min() >= -1 and tensor.max() <= 1
    corner, centre = tensor[0, :, 2, 2], tensor[0, :, 128, 128]
    assert corner.tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)
    assert centre.tolist() == pytest.approx([1.0, -1.0, -1.0], abs=1e-6)


def test_non_square_images_are_padded_not_stretched(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (200, 100), (0, 0, 0)).save(path)
    tensor = image_to_tensor(load_image(path))
    # a black 2:1 image becomes a black band across the middle half, white above and below
    column = tensor[0, 0, :, 128]
    assert column[10].item() == pytest.approx(1.0) and column[245].item() == pytest.approx(1.0)
    assert column[128].item() == pytest.approx(-1.0)
    assert (column < 0).sum().item() == pytest.approx(128, abs=3)


def test_missing_empty_and_non_image_files_are_refused(tmp_path):
    with pytest.raises(ImageInputError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageInputError, match="not a file"):
        load_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageInputError, match="is empty"):
        load_image(tmp_path / "empty.png")
    (tmp_path / "notes.png").write_text("this is text, not pixels")
    with pytest.raises(ImageInputError, match="not an image"):
        load_image(tmp_path / "notes.png")


def test_truncated_image_is_refused(tmp_path):
    path = tmp_path / "full.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageInputError, match="damaged or truncated"):
        load_image(tmp_path / "cut.png")


def test_huge_image_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (9000, 9000)).save(path)  # 81 megapixels, a few kilobytes on disk
    with pytest.raises(ImageInputError, match="9000x9000 pixels; the limit is 64 megapixels"):
        load_image(path)


def test_bytes_decode_like_files(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGBA", (10, 20), (1, 2, 3, 4)).save(path)
    assert decode_image(path.read_bytes()).size == (10, 20)
    with pytest.raises(ImageInputError, match="not an image"):
        decode_image(b"\x89PNG but not really")


def test_views_grid_is_side_by_side(tmp_path):
    views = np.stack([np.full((8, 8, 3), value, np.uint8) for value in (0, 80, 160, 240)])
    path = save_views_grid(views, tmp_path / "sub" / "grid.png")
    grid = np.asarray(Image.open(path))
    assert grid.shape == (8, 32, 3)
    assert [grid[0, 8 * k, 0] for k in range(4)] == [0, 80, 160, 240]
    assert not list(path.parent.glob("*.partial"))


def test_tensor_to_uint8_clamps():
    import torch

    out = tensor_to_uint8(torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5))
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]
