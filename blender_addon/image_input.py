"""The input image of a generation as PNG bytes: from a file, an Image datablock, or the active image empty.

A photo from disk is read and downscaled to what the model needs (``MAX_SEND_SIDE``) on a worker thread with
Blender's ``imbuf`` module (no Image datablock is left behind), then the small result is encoded as PNG; a 24 MP
camera JPEG costs the UI well under a second (imbuf keeps the GIL while it decodes, so the UI's Python waits for
the decode itself, not for the pure-Python PNG encoding of 24 MP it used to do). ``prepare_file`` starts that
and ``PreparedImage.result`` collects it.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from concurrent.futures import Future, ThreadPoolExecutor

import bpy
import numpy as np

from .protocol import PNG_SIGNATURE, png_size

# The model sees 256x256 (the backend crops the object and resizes); 512 px on the long side keeps twice that for
# the crop while a PNG of it stays well under a megabyte.
MAX_SEND_SIDE = 512
_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iso3d-image")


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


def _checked_path(path: str) -> str:
    path = bpy.path.abspath(path) if path else ""
    if not path:
        raise ImageInputError("Choose an input image file first")
    if not os.path.isfile(path):
        raise ImageInputError(f"The image file {path} does not exist")
    return path


def small_png_file(path: str) -> bytes | None:
    """The file's bytes when it is a PNG already small enough to send as is; None otherwise."""
    with open(path, "rb") as file:
        head = file.read(32)
        if not head.startswith(PNG_SIGNATURE):
            return None
        try:
            if max(png_size(head)) > MAX_SEND_SIDE:
                return None
        except ValueError:
            return None
        return head + file.read()


def downscale_file(path: str, folder: str) -> str:
    """(Worker thread.) ``path`` read with imbuf, downscaled to ``MAX_SEND_SIDE`` on its long side, written into
    ``folder`` in its own format; returns the written file. ImageInputError when it is no image."""
    import imbuf

    try:
        buffer = imbuf.load(path)
    except Exception:  # noqa: BLE001 - imbuf raises OSError/ValueError/RuntimeError by version
        raise ImageInputError(f"The file {os.path.basename(path)} could not be read as an image") from None
    try:
        width, height = buffer.size
        if width == 0 or height == 0:
            raise ImageInputError(f"The file {os.path.basename(path)} has no pixels")
        scale = MAX_SEND_SIDE / max(width, height)
        if scale < 1.0:
            # imbuf holds the GIL while it works, so Python in the UI waits for it: a nearest-pixel step to 3x the
            # target first (24 MP: 25 ms instead of 310 ms for bilinear all the way), then bilinear, which
            # averages the 3x3 pixels per output pixel against aliasing.
            if scale < 1 / 3:
                buffer.resize((max(round(width * scale * 3), 1), max(round(height * scale * 3), 1)), method="FAST")
            buffer.resize((max(round(width * scale), 1), max(round(height * scale), 1)), method="BILINEAR")
        output = os.path.join(folder, "input.img")
        imbuf.write(buffer, filepath=output)
    finally:
        buffer.free()
    return output


def small_file_png(path: str) -> bytes:
    """(Main thread.) A small image file as PNG bytes: as is when PNG, else decoded by Blender and encoded; the
    Image datablock this needs is removed again."""
    with open(path, "rb") as file:
        data = file.read()
    if data.startswith(PNG_SIGNATURE):
        return data
    image = bpy.data.images.load(path, check_existing=False)
    try:
        if image.size[0] == 0 or image.size[1] == 0:
            raise ImageInputError("The image could not be decoded")
        return image_datablock_png(image)
    finally:
        bpy.data.images.remove(image)


class PreparedImage:
    """An input image being made ready to send: done at once (PNG bytes) or on the worker thread (a file)."""

    def __init__(self, name: str, png: bytes | None = None, future: Future | None = None, folder=None):
        self.name, self._png, self._future, self._folder = name, png, future, folder

    def ready(self) -> bool:
        return self._png is not None or self._future is None or self._future.done()

    def result(self) -> bytes:
        """The PNG bytes (main thread; call when ``ready``); ImageInputError in words when it failed."""
        if self._png is None:
            try:
                self._png = small_file_png(self._future.result())
            except ImageInputError:
                raise
            except Exception as error:  # noqa: BLE001 - any failure of the decoder, in words
                raise ImageInputError(f"The image {self.name} could not be read: {error}") from None
            finally:
                self._folder.cleanup()
        return self._png


def prepare_file(path: str) -> PreparedImage:
    """Start making the image file ``path`` ready to send (never decodes on the calling thread)."""
    path = _checked_path(path)
    name = os.path.splitext(os.path.basename(path))[0]
    small = small_png_file(path)
    if small is not None:
        return PreparedImage(name, png=small)
    folder = tempfile.TemporaryDirectory(prefix="iso3d-input-")
    return PreparedImage(name, future=_WORKER.submit(downscale_file, path, folder.name), folder=folder)


def prepare_input(context, settings) -> PreparedImage:
    """The image the panel's settings point at, being made ready to send."""
    if settings.image_source == "FILE":
        return prepare_file(settings.image_path)
    png, name = input_image_png(context, settings)
    return PreparedImage(name, png=png)


def input_image_png(context, settings) -> tuple[bytes, str]:
    """(PNG bytes, a short name for the result) of the image the panel's settings point at."""
    if settings.image_source == "FILE":
        prepared = prepare_file(settings.image_path)
        return prepared.result(), prepared.name
    if settings.image_source == "IMAGE":
        if settings.image is None:
            raise ImageInputError("Choose an input Image first")
        return image_datablock_png(settings.image), settings.image.name
    obj = context.active_object
    if obj is None or obj.type != "EMPTY" or obj.empty_display_type != "IMAGE" or obj.data is None:
        raise ImageInputError("The active object is not an image empty with an image")
    return image_datablock_png(obj.data), obj.data.name
