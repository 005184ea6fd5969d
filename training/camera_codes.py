"""The one converter from a rendered object's ``cameras.json`` to the model's 16-d camera codes.

The file is read by ``training.render_records.load_record`` (the one reader of render records: format checked,
angles in ``*_deg`` or ``*_rad``); its ``c2w`` matrices are in the convention of ``backend.diffusion.cameras``
(Blender Z-up, columns [right, up, back, position]). The encodings themselves live there; this module only picks
the views and calls them.
"""

from __future__ import annotations

import torch

from backend.diffusion.cameras import CAMERA_ENCODINGS, DEFAULT_CAMERA_ENCODING, encode_c2w, encode_cameras
from training.render_records import load_record, view_angle_deg, view_set_name

__all__ = ["MATRIX_ENCODING", "camera_codes", "load_record"]

MATRIX_ENCODING = "c2w"  # true-geometry matrices from the file, translation normalised (MVDream's training input)


def camera_codes(record: dict, encoding: str = DEFAULT_CAMERA_ENCODING, view_set: str | None = None) -> torch.Tensor:
    """Camera codes [N, 16] (float32) of the record's views, in file order (only ``view_set`` when given).

    ``encoding``: ``"isotropic3d"`` or ``"mvdream"`` (from the views' angles, as the model core encodes
    elevation/azimuth) or ``"c2w"`` (from the stored matrices; equals ``"mvdream"`` for look-at cameras).
    """
    views = [view for view in record["views"] if view_set is None or view_set_name(view) == view_set]
    if encoding == MATRIX_ENCODING:
        return encode_c2w(torch.tensor([view["c2w"] for view in views], dtype=torch.float64))
    if encoding not in CAMERA_ENCODINGS:
        raise ValueError(f"unknown camera encoding {encoding!r}; choose one of {', '.join(CAMERA_ENCODINGS)}, c2w")
    where = str(record.get("object_id", "cameras.json"))
    elevations = [view_angle_deg(view, "elevation", where) for view in views]
    azimuths = [view_angle_deg(view, "azimuth", where) for view in views]
    return encode_cameras(elevations, azimuths, encoding)
