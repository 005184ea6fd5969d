"""Input images of submitted jobs, prepared off the socket loop: the pixel cap is read from the PNG header before
anything is decoded; decoding and downscaling run in a worker thread; what is stored is the downscaled PNG, and its
decoded image goes on with it (the job's model input is made from it, so the job need not decode the file again)."""

from __future__ import annotations

import io
from typing import NamedTuple

from PIL import Image

from backend.errors import UserError
from backend.imaging import decode_image
from blender_addon.core import protocol


def check_input_header(png: bytes, max_pixels: int) -> None:
    """UserError unless the PNG's header states a size within ``max_pixels`` (nothing is decoded)."""
    width, height = protocol.png_size(png)
    if width * height > max_pixels:
        raise UserError(f"the image is {width}x{height} pixels; this backend takes at most {max_pixels:,} pixels "
                        "(downscale it first)")


class StoredInput(NamedTuple):
    png: bytes  # what is stored as the job's input.png
    image: Image.Image  # RGBA: the pixels that decoding ``png`` gives (PNG is lossless)


def prepare_input(png: bytes, max_side: int) -> StoredInput:
    """The PNG to store for a job and its image: decoded with the imaging checks (damaged, truncated and bomb images
    are refused) and, if larger, downscaled to ``max_side`` pixels a side with premultiplied alpha (so the colour of
    transparent pixels does not bleed into the edges)."""
    image = decode_image(png, "the submitted image")
    if max(image.size) <= max_side:
        return StoredInput(png, image)  # it decodes and is small enough: stored as sent
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.convert("RGBa").resize(size, Image.Resampling.BOX).convert("RGBA")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return StoredInput(buffer.getvalue(), image)

