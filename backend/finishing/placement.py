"""Placement for Blender: the bounding-box centre at the origin and the largest extent scaled to ``size``.

The pipeline measures the full surface (before decimation) and applies that one transform to every LOD, so LODs
overlay exactly; a decimated level's own extent matches ``size`` within the decimation error (under 1% in tests).
Vertices stay in Blender's Z-up world (the field's frame is already upright: +Z is up); exporters convert to the
file format's own up axis.
"""

from __future__ import annotations

import numpy as np


def place_upright(vertices: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(placed vertices float32 [V, 3], offset [3], scale): placed = (vertices + offset) * scale, with the
    bounding box centred on the origin and its largest side ``size`` world units (metres in Blender)."""
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    offset = -(low + high) / 2.0
    extent = float((high - low).max())
    scale = size / extent if extent > 0 else 1.0
    return ((vertices + offset) * scale).astype(np.float32), offset.astype(np.float32), scale
