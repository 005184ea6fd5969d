"""The bpy-free half of the input image (the Blender half is ``image_input``): the send limit, PNG encoding with
zlib only, the small-PNG shortcut, and the child process that downscales a photo from disk.

The downscale child is Blender itself in the background (or, in the bpy module, this Python), so that the decode
never holds the parent Blender's GIL; it dies with that Blender (``parent_watch``: it would otherwise finish a
decode nobody waits for, or hang on an unreadable file for good).
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import numpy as np

from .parent_watch import PATH as PARENT_WATCH_PATH
from .parent_watch import child_environment
from .protocol import PNG_SIGNATURE, png_size

# The model sees 256x256 (the backend crops the object and resizes); 512 px on the long side keeps twice that for
# the crop while a PNG of it stays well under a megabyte.
MAX_SEND_SIDE = 512


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


# Run in a child Blender (or a child Python with the bpy module): decode, downscale and write the image there, so
# the decode never holds this Blender's GIL (imbuf keeps it while it works: a 24 MP JPEG froze the UI's Python for
# 0.6-2 s on a worker thread). Arguments: input path, output path, longest side, the path of parent_watch.py.
# Exit code 3: not an image.
DOWNSCALE_SCRIPT = """
import importlib.util
import sys
path, output, side, parent_watch = sys.argv[-4], sys.argv[-3], int(sys.argv[-2]), sys.argv[-1]
spec = importlib.util.spec_from_file_location("iso3d_parent_watch", parent_watch)
watch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(watch)
watch.exit_with_parent(graceful=False)
try:
    import bpy  # the bpy module needs it first; Blender itself has it loaded
except ImportError:
    pass
import imbuf
try:
    buffer = imbuf.load(path)
except Exception as error:
    print(f"not an image: {error}", file=sys.stderr)
    sys.exit(3)
width, height = buffer.size
if width == 0 or height == 0:
    print("no pixels", file=sys.stderr)
    sys.exit(3)
scale = side / max(width, height)
if scale < 1.0:
    # a nearest-pixel step to 3x the target first (24 MP: 25 ms instead of 310 ms bilinear all the way), then
    # bilinear, which averages the 3x3 pixels of each output pixel against aliasing
    if scale < 1 / 3:
        buffer.resize((max(round(width * scale * 3), 1), max(round(height * scale * 3), 1)), method="FAST")
    buffer.resize((max(round(width * scale), 1), max(round(height * scale), 1)), method="BILINEAR")
imbuf.write(buffer, filepath=output)
"""


def downscale_command(path: str, output: str, blender_binary: str) -> list[str]:
    """The child process that downscales ``path`` into ``output``: Blender itself in the background
    (``blender_binary``, i.e. ``bpy.app.binary_path``), or, in the bpy module (no Blender binary: ""), this Python."""
    arguments = [path, output, str(MAX_SEND_SIDE), PARENT_WATCH_PATH]
    if blender_binary:
        return [blender_binary, "--background", "--factory-startup", "--python-exit-code", "2",
                "--python-expr", DOWNSCALE_SCRIPT, "--", *arguments]
    return [sys.executable, "-c", DOWNSCALE_SCRIPT, *arguments]


def start_downscale(path: str, output: str, blender_binary: str) -> subprocess.Popen:
    """Start the downscale child (it dies with this process); OSError when it cannot start. Its stderr is a pipe
    (the reason when it fails)."""
    return subprocess.Popen(downscale_command(path, output, blender_binary), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_environment())
