"""Input images: the conditioning preparation (straight-alpha area resize, then white; against hand-computed averages
and cv2's INTER_AREA), the preview preparation, squaring, and clear refusals of bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from backend.imaging import (
    ImageInputError,
    area_weights,
    decode_image,
    load_image,
    prepare_condition_image,
    prepare_preview_image,
    save_views_grid,
    tensor_to_uint8,
)
from tests.helpers.paths import GOLDEN_DIR

# Output values are float32 in [-1, 1] computed in float64: 1e-6 covers the final float32 rounding (2^-24 of 2).
EXACT = 1e-6

# A 3x3 RGBA image whose transparent pixels carry colours (green, magenta, white, yellow, black): a straight-alpha
# average lets those colours bleed into the edges of the opaque ones, a premultiplied one does not.
PIXELS_3X3 = np.array(
    [
        [(255, 0, 0, 255), (0, 255, 0, 0), (0, 0, 255, 255)],
        [(255, 0, 255, 0), (40, 80, 120, 128), (255, 255, 0, 0)],
        [(0, 255, 0, 255), (255, 255, 255, 0), (0, 0, 0, 0)],
    ],
    np.uint8,
)


def hand_computed_2x2() -> np.ndarray:
    """PIXELS_3X3 area-resized to 2x2 (scale 1.5: output pixel 0 covers source pixels 0 and half of 1, i.e. weights
    2/3 and 1/3 per axis; pixel 1 covers half of 1 and all of 2), then composited over white. [2, 2, 3] in [-1, 1]."""
    p = PIXELS_3X3.astype(np.float64) / 255.0
    rgba = np.empty((2, 2, 4))
    rgba[0, 0] = (4 * p[0, 0] + 2 * p[0, 1] + 2 * p[1, 0] + 1 * p[1, 1]) / 9
    rgba[0, 1] = (2 * p[0, 1] + 4 * p[0, 2] + 1 * p[1, 1] + 2 * p[1, 2]) / 9
    rgba[1, 0] = (2 * p[1, 0] + 1 * p[1, 1] + 4 * p[2, 0] + 2 * p[2, 1]) / 9
    rgba[1, 1] = (1 * p[1, 1] + 2 * p[1, 2] + 2 * p[2, 1] + 4 * p[2, 2]) / 9
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    return (rgb * alpha + (1 - alpha)) * 2 - 1


def as_hwc(tensor) -> np.ndarray:
    assert tensor.shape[:2] == (1, 3) and tensor.dtype == torch.float32
    return tensor[0].permute(1, 2, 0).numpy().astype(np.float64)


def test_condition_image_is_the_straight_alpha_area_average_then_white():
    expected = hand_computed_2x2()
    small = as_hwc(prepare_condition_image(Image.fromarray(PIXELS_3X3, "RGBA"), size=2))
    np.testing.assert_allclose(small, expected, atol=EXACT)
    # A premultiplied average (PIL's BOX filter, the old preparation) does not bleed the transparent colours:
    # it differs here by far more than 1/255, so the comparison above tells the two apart.
    premultiplied = np.asarray(Image.fromarray(PIXELS_3X3, "RGBA").resize((2, 2), Image.Resampling.BOX), np.float64)
    premultiplied = premultiplied / 255.0
    boxed = (premultiplied[..., :3] * premultiplied[..., 3:] + 1 - premultiplied[..., 3:]) * 2 - 1
    assert np.abs(boxed - expected).max() > 0.1


def test_condition_image_at_the_model_size_with_a_non_integer_scale():
    tiled = np.tile(PIXELS_3X3, (128, 128, 1))  # 384x384 -> 256x256: scale 1.5, the 2x2 result tiled
    tensor = prepare_condition_image(Image.fromarray(tiled, "RGBA"))
    assert tensor.shape == (1, 3, 256, 256)
    np.testing.assert_allclose(as_hwc(tensor), np.tile(hand_computed_2x2(), (128, 128, 1)), atol=EXACT)


@pytest.mark.parametrize("source", [45, 64, 20])
def test_condition_image_matches_cv2_inter_area_within_one_level(source):
    # tests/golden/cv2_inter_area.npz: random RGBA squares (transparent pixels keep their colours) and cv2 4.14's
    # INTER_AREA resize of them to 32x32, the reference's call (45: non-integer downscale, 64: 2x, 20: upscale).
    golden = np.load(GOLDEN_DIR / "cv2_inter_area.npz")
    reference = golden[f"cv2_inter_area_{source}_to_32"].astype(np.float64) / 255.0
    expected = (reference[..., :3] * reference[..., 3:] + 1 - reference[..., 3:]) * 2 - 1
    ours = as_hwc(prepare_condition_image(Image.fromarray(golden[f"input_{source}"], "RGBA"), size=32))
    # cv2 rounds the resized RGBA to 8 bits and we do not: at most half a level in colour and in alpha, which the
    # composite turns into at most one level (1/255 in [0, 1], 2/255 in [-1, 1]).
    assert np.abs(ours - expected).max() <= 2 / 255


def test_area_weights_are_exact_overlaps():
    weights = area_weights(3, 2)
    np.testing.assert_array_equal(weights * 3, [[2, 1, 0], [0, 1, 2]])
    for source, target in ((384, 256), (20, 32), (1000, 256), (256, 256)):
        np.testing.assert_allclose(area_weights(source, target).sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(area_weights(7, 7), np.eye(7))


def test_condition_image_pads_a_photo_with_opaque_white_and_a_cut_out_with_transparent_white():
    # Opaque 300x200 black photo: centred in a 300-square, its rows are [50, 250), output rows [42.67, 213.33).
    photo = as_hwc(prepare_condition_image(Image.new("RGB", (300, 200), (0, 0, 0))))
    column = photo[:, 128, 0]
    assert np.all(column[:42] == 1.0) and np.all(column[214:] == 1.0)
    np.testing.assert_allclose(column[43:213], -1.0, atol=EXACT)
    # Row 42 is 1/3 photo, 2/3 padding: (2/3 white + 1/3 black) = 2/3 in [0, 1], 1/3 in [-1, 1]
    np.testing.assert_allclose(column[42], 1 / 3, atol=EXACT)
    # A cut-out on transparent black: the padding continues its background, so no dark seam where they meet.
    rgba = np.zeros((200, 300, 4), np.uint8)
    rgba[80:120, 130:170] = (255, 0, 0, 255)
    cut_out = as_hwc(prepare_condition_image(Image.fromarray(rgba, "RGBA")))
    red = (slice(int(130 * 256 / 300), int(np.ceil(170 * 256 / 300))),) * 2
    background = np.ones(cut_out.shape[:2], bool)
    background[red] = False
    np.testing.assert_allclose(cut_out[background], 1.0, atol=EXACT)


def test_preview_image_composites_first_then_resizes_bicubic(tmp_path):
    image = Image.fromarray(PIXELS_3X3, "RGBA").resize((96, 96), Image.Resampling.NEAREST)
    on_white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    on_white.alpha_composite(image)
    expected = np.asarray(on_white.convert("RGB").resize((256, 256), Image.Resampling.BICUBIC), np.float64)
    np.testing.assert_allclose(as_hwc(prepare_preview_image(image)), expected / 127.5 - 1, atol=EXACT)


def test_transparent_pixels_become_white_and_range_is_minus_one_to_one(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[16:48, 16:48] = (255, 0, 0, 255)  # opaque red square on a transparent background
    path = tmp_path / "red.png"
    Image.fromarray(rgba, "RGBA").save(path)
    for prepare in (prepare_condition_image, prepare_preview_image):
        tensor = prepare(load_image(path))
        assert tensor.shape == (1, 3, 256, 256)
        assert tensor.min() >= -1 and tensor.max() <= 1
        corner, centre = tensor[0, :, 2, 2], tensor[0, :, 128, 128]
        assert corner.tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)
        assert centre.tolist() == pytest.approx([1.0, -1.0, -1.0], abs=1e-6)


def test_non_square_images_are_padded_not_stretched(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (200, 100), (0, 0, 0)).save(path)
    tensor = prepare_preview_image(load_image(path))
    # a black 2:1 image becomes a black band across the middle half, white above and below
    column = tensor[0, 0, :, 128]
    assert column[10].item() == pytest.approx(1.0) and column[245].item() == pytest.approx(1.0)
    assert column[128].item() == pytest.approx(-1.0)
    assert (column < 0).sum().item() == pytest.approx(128, abs=3)


def test_grey_images_of_more_than_eight_bits_keep_their_range(tmp_path):
    """A 16-bit grey PNG and a float TIFF read as the 8-bit grey image of the same values (PIL's own conversion
    clipped them at 255: almost all white, or all black)."""
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    expected = np.repeat(levels[..., None], 3, axis=-1)
    Image.fromarray(levels.astype(np.uint16) * 257).save(tmp_path / "grey16.png")  # PIL mode I;16
    Image.fromarray((levels / 255.0).astype(np.float32)).save(tmp_path / "grey.tiff")  # PIL mode F
    Image.fromarray(levels.astype(np.int32) * 257, "I").save(tmp_path / "grey32.tiff")  # PIL mode I, 16-bit values
    for name in ("grey16.png", "grey.tiff", "grey32.tiff"):
        loaded = np.asarray(load_image(tmp_path / name))
        np.testing.assert_array_equal(loaded[..., :3], expected, err_msg=name)
        assert (loaded[..., 3] == 255).all()
    Image.fromarray(levels.astype(np.int32), "I").save(tmp_path / "grey8_in_32.tiff")  # values 0-255: as they are
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "grey8_in_32.tiff"))[..., :3], expected)


@pytest.mark.parametrize("orientation", [1, 6, 8, 3])
def test_a_photo_is_read_upright_as_its_exif_orientation_says(tmp_path, orientation):
    """Stored 40x20 with its left half red; EXIF orientation 6 (turn 90 degrees clockwise to view): 20x40, red on
    top; 8 (counter-clockwise): red below; 3 (half a turn): red on the right; 1: as stored."""
    stored = np.full((20, 40, 3), 255, np.uint8)
    stored[:, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "photo.jpg", quality=95, exif=exif)
    seen = np.asarray(load_image(tmp_path / "photo.jpg"))[..., :3].astype(int)
    red = (seen[..., 0] > 200) & (seen[..., 1] < 60)
    expected_size = (20, 40) if orientation in (1, 3) else (40, 20)
    assert seen.shape[:2] == expected_size
    # the red half and the white half, each without the 2 pixels at their border (JPEG's ringing)
    red_half, white_half = {1: (red[:, :18], red[:, 22:]), 3: (red[:, 22:], red[:, :18]),
                            6: (red[:18], red[22:]), 8: (red[22:], red[:18])}[orientation]
    assert red_half.all() and not white_half.any()


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
