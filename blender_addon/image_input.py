"""The input image of a generation as PNG bytes: from a file, an Image datablock, or the active image empty."""

from __future__ import annotations

import os
import struct
import zlib

import bpy
import numpy as np

from .protocol import PNG_SIGNATURE


class ImageInputError(Exception):
    """The chosen image cannot be used; the message says why in plain words."""


def encode_png(rgba: np.ndarray) -> bytes:
    """uint8 [H, W, 4] (top row first) as a PNG (RGBA, 8 bit), with zlib only."""
    height, width, _ = rgba.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgba.reshape(height, width * 4)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(
        b"IEND", b"")


def image_datablock_png(image) -> bytes:
    """An Image datablock as PNG bytes: its PNG file or packed PNG as is, anything else from its pixels."""
    packed = image.packed_file
    if packed is not None and bytes(packed.data[:8]) == PNG_SIGNATURE:
        return bytes(packed.data)
    path = bpy.path.abspath(image.filepath) if image.filepath else ""
    if path and os.path.isfile(path) and not image.is_dirty:
        with open(path, "rb") as file:
            data = file.read()
        if data.startswith(PNG_SIGNATURE):
            return data
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageInputError(f"The image '{image.name}' has no pixels (is its file missing?)")
    pixels = np.empty(width * height * image.channels, np.float32)
    image.pixels.foreach_get(pixels)
    pixels = pixels.reshape(height, width, image.channels)
    rgba = np.ones((height, width, 4), np.float32)
    rgba[..., : min(image.channels, 4)] = pixels[..., :4]
    if image.channels < 3:
        rgba[..., 1:3] = rgba[..., :1]
    return encode_png((np.clip(rgba[::-1], 0.0, 1.0) * 255 + 0.5).astype(np.uint8))


def image_file_png(path: str) -> bytes:
    path = bpy.path.abspath(path) if path else ""
    if not path:
        raise ImageInputError("Choose an input image file first")
    if not os.path.isfile(path):
        raise ImageInputError(f"The image file {path} does not exist")
    with open(path, "rb") as file:
        data = file.read()
    if data.startswith(PNG_SIGNATURE):
        return data
    unreadable = ImageInputError(f"The file {path} could not be read as an image")
    try:  # JPEG, EXR, ...: through Blender's image loader
        image = bpy.data.images.load(path, check_existing=True)
    except RuntimeError:
        raise unreadable from None
    if image.size[0] == 0 or image.size[1] == 0:
        if image.users == 0:
            bpy.data.images.remove(image)
        raise unreadable
    return image_datablock_png(image)


def input_image_png(context, settings) -> tuple[bytes, str]:
    """(PNG bytes, a short name for the result) of the image the panel's settings point at."""
    if settings.image_source == "FILE":
        path = settings.image_path
        return image_file_png(path), os.path.splitext(os.path.basename(bpy.path.abspath(path)))[0]
    if settings.image_source == "IMAGE":
        if settings.image is None:
            raise ImageInputError("Choose an input Image first")
        return image_datablock_png(settings.image), settings.image.name
    obj = context.active_object
    if obj is None or obj.type != "EMPTY" or obj.empty_display_type != "IMAGE" or obj.data is None:
        raise ImageInputError("The active object is not an image empty with an image")
    return image_datablock_png(obj.data), obj.data.name
