"""The one converter from a rendered object's ``cameras.json`` to the model's 16-d camera codes.

The file's angles are in degrees (``*_deg``) and its ``c2w`` matrices are in the convention of
``backend.diffusion.cameras`` (Blender Z-up, columns [right, up, back, position]); the encodings themselves live
there, this module only reads the file and calls them.
"""

from __future__ import annotations

import json
import os

import torch

from backend.diffusion.cameras import CAMERA_ENCODINGS, encode_c2w, encode_cameras
from blender_addon.render_plan import RECORD_FILE, RECORD_FORMAT

MATRIX_ENCODING = "c2w"  # true-geometry matrices from the file, translation normalised (MVDream's training input)


def load_record(path: str) -> dict:
    """Reads ``cameras.json`` (or the object folder holding it) and checks its format."""
    if os.path.isdir(path):
        path = os.path.join(path, RECORD_FILE)
    with open(path, encoding="utf-8") as handle:
        record = json.load(handle)
    if record.get("format") != RECORD_FORMAT:
        raise ValueError(f"{path}: not a rendered-views record (format {record.get('format')!r}, want {RECORD_FORMAT})")
    return record


def camera_codes(record: dict, encoding: str = "isotropic3d", view_set: str | None = None) -> torch.Tensor:
    """Camera codes [N, 16] (float32) of the record's views, in file order (only ``view_set`` when given).

    ``encoding``: ``"isotropic3d"`` or ``"mvdream"`` (from the views' degrees, as the model core encodes
    elevation/azimuth) or ``"c2w"`` (from the stored matrices; equals ``"mvdream"`` for look-at cameras).
    """
    views = [view for view in record["views"] if view_set is None or view["set"] == view_set]
    if encoding == MATRIX_ENCODING:
        return encode_c2w(torch.tensor([view["c2w"] for view in views], dtype=torch.float64))
    if encoding not in CAMERA_ENCODINGS:
        raise ValueError(f"unknown camera encoding {encoding!r}; choose one of {', '.join(CAMERA_ENCODINGS)}, c2w")
    elevations = [view["elevation_deg"] for view in views]
    azimuths = [view["azimuth_deg"] for view in views]
    return encode_cameras(elevations, azimuths, encoding)
