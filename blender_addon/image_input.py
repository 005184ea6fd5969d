"""The input image of a generation as PNG bytes: from a file, an Image datablock, or the active image empty.

A photo from disk is read and downscaled to what the model needs (``MAX_SEND_SIDE``) by a child process (Blender
itself in the background, with its ``imbuf`` module; the bpy-free part is ``core.image_downscale``), so this Blender
never decodes it; only the small result is loaded and encoded as PNG here, and no Image datablock is left behind.
``prepare_file`` starts that, ``PreparedImage.ready`` says when it is done and ``PreparedImage.result`` collects it.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import bpy
import numpy as np

from .core.image_downscale import ImageInputError, encode_png, small_png_file, start_downscale
from .core.protocol import PNG_SIGNATURE


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
    """An input image being made ready to send: done at once (PNG bytes) or in a child process (a file)."""

    def __init__(self, name: str, png: bytes | None = None, process: subprocess.Popen | None = None,
                 folder: tempfile.TemporaryDirectory | None = None, output: str = ""):
        self.name, self._png, self._process, self._folder, self._output = name, png, process, folder, output

    def ready(self) -> bool:
        return self._png is not None or self._process.poll() is not None

    def cancel(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        if self._folder is not None:
            self._folder.cleanup()

    def result(self) -> bytes:
        """The PNG bytes (main thread; call when ``ready``); ImageInputError in words when it failed."""
        if self._png is not None:
            return self._png
        try:
            _, errors = self._process.communicate()
            if self._process.returncode != 0 or not os.path.isfile(self._output):
                lines = [line for line in (errors or b"").decode(errors="replace").splitlines() if line.strip()]
                reason = "it is not an image Blender can read" if self._process.returncode == 3 else (
                    lines[-1].strip() if lines else f"the image reader exited with {self._process.returncode}")
                raise ImageInputError(f"The image {self.name} could not be read: {reason}")
            self._png = small_file_png(self._output)
        finally:
            self._folder.cleanup()
        return self._png


def prepare_file(path: str) -> PreparedImage:
    """Start making the image file ``path`` ready to send (never decodes in this process)."""
    path = _checked_path(path)
    name = os.path.splitext(os.path.basename(path))[0]
    small = small_png_file(path)
    if small is not None:
        return PreparedImage(name, png=small)
    folder = tempfile.TemporaryDirectory(prefix="iso3d-input-")
    output = os.path.join(folder.name, "input.img")
    try:
        process = start_downscale(path, output, bpy.app.binary_path)
    except OSError as error:
        folder.cleanup()
        raise ImageInputError(f"Could not start the image reader: {error}") from None
    return PreparedImage(name, process=process, folder=folder, output=output)


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
