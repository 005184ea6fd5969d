"""Input images: loading with clear errors and limits, and the conversion to the model's input.

The model's input is a square RGB image on a white background in [-1, 1]. RGBA inputs are composited over white
at full resolution (as the reference's ``i2i.py`` does), non-square ones are padded to a square with white
(keeping the object's proportions), then resized to 256x256 with bicubic filtering.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from backend.errors import UserError
from blender_addon.atomic_files import open_atomically

MODEL_INPUT_SIZE = 256
MAX_IMAGE_PIXELS = 64_000_000  # 8000 x 8000
MAX_IMAGE_BYTES = 256 * 1024 * 1024


class ImageInputError(UserError, ValueError):
    """An input image that cannot be used; the message says why in plain words."""


def _open_checked(source, label: str) -> Image.Image:
    try:
        with Image.open(source) as probe:
            width, height = probe.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageInputError(
                    f"{label} is {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS // 1_000_000} megapixels"
                )
            if width < 1 or height < 1:
                raise ImageInputError(f"{label} has no pixels")
            probe.load()
            return probe.convert("RGBA")
    except ImageInputError:
        raise
    except UnidentifiedImageError:
        raise ImageInputError(f"{label} is not an image PIL can read (PNG, JPEG, WebP, ...)") from None
    except Image.DecompressionBombError:
        raise ImageInputError(f"{label} is too large to decode safely") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageInputError(f"{label} is damaged or truncated ({error})") from None


def load_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file as RGBA, refusing missing, unreadable, non-image and oversized files."""
    path = Path(path)
    if not path.exists():
        raise ImageInputError(f"image {path} does not exist")
    if not path.is_file():
        raise ImageInputError(f"image {path} is not a file")
    size = path.stat().st_size
    if size == 0:
        raise ImageInputError(f"image {path} is empty")
    if size > MAX_IMAGE_BYTES:
        raise ImageInputError(f"image {path} is {size / 2**20:.0f} MiB; the limit is {MAX_IMAGE_BYTES // 2**20} MiB")
    return _open_checked(path, f"image {path}")


def decode_image(data: bytes, label: str = "image") -> Image.Image:
    """Decode image bytes (e.g. a PNG received over the wire) as RGBA, with the same checks as ``load_image``."""
    if not data:
        raise ImageInputError(f"{label} is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageInputError(f"{label} is {len(data) / 2**20:.0f} MiB; the limit is {MAX_IMAGE_BYTES // 2**20} MiB")
    return _open_checked(io.BytesIO(data), label)


def composite_on_white(image: Image.Image) -> Image.Image:
    """RGB image of ``image`` composited over white, padded with white to a centred square."""
    rgba = image.convert("RGBA")
    side = max(rgba.size)
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    canvas.alpha_composite(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2))
    return canvas.convert("RGB")


def image_to_tensor(image: Image.Image, size: int = MODEL_INPUT_SIZE, method: str = "preview") -> torch.Tensor:
    """[1, 3, size, size] float32 in [-1, 1] on white, square (padded, not stretched).

    ``method="preview"``: composite over white at full resolution, then bicubic resize (the reference's
    ``i2i.py``). ``method="sds"``: area-resize the straight-alpha RGBA, then composite over white (the reference's
    SDS guidance, cv2 INTER_AREA)."""
    if method == "preview":
        rgb = composite_on_white(image)
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
        array = np.asarray(rgb, dtype=np.float32) / 255.0
    elif method == "sds":
        rgba = image.convert("RGBA")
        side = max(rgba.size)
        square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        square.paste(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2))
        values = np.asarray(square.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0
        array = values[..., :3] * values[..., 3:] + (1.0 - values[..., 3:])
    else:
        raise ValueError(f"unknown image method {method!r}")
    return torch.from_numpy(np.ascontiguousarray(array * 2.0 - 1.0)).permute(2, 0, 1)[None].contiguous()


def tensor_to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3]."""
    images = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()


def save_views_grid(images: np.ndarray, path: str | os.PathLike) -> Path:
    """Save uint8 [V, H, W, 3] views side by side (left to right, like the reference scripts) as one PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = np.concatenate(list(images), axis=1)
    with open_atomically(path) as handle:
        Image.fromarray(grid).save(handle, format="PNG")
    return path
