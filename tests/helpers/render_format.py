"""Writes small dataset folders in exactly the renderer's output format (its own bpy-free record writer,
blender_addon.core.render_plan), with synthetic images instead of Blender renders: fast data for training tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from blender_addon.core.render_plan import RECORD_FILE, RenderSettings, object_record, plan_object

TEST_SETTINGS = RenderSettings(resolution=64, fixed_views=8, random_views=4, samples=1)


def synthetic_view(resolution: int, elevation_deg: float, azimuth_deg: float, hue: int) -> np.ndarray:
    """A coloured disc on white whose position follows the camera angles (uint8 [H, W, 3])."""
    y, x = np.mgrid[0:resolution, 0:resolution] / resolution
    cx = 0.5 + 0.25 * math.sin(math.radians(azimuth_deg))
    cy = 0.5 - 0.2 * math.sin(math.radians(elevation_deg))
    inside = (x - cx) ** 2 + (y - cy) ** 2 < 0.04
    image = np.full((resolution, resolution, 3), 255, dtype=np.uint8)
    colour = np.array([(hue * 97) % 256, (hue * 53 + 80) % 256, (hue * 31 + 160) % 256], dtype=np.uint8)
    image[inside] = colour
    return image


def write_object(root: Path, object_id: str, hue: int, settings: RenderSettings = TEST_SETTINGS) -> Path:
    """One finished object folder: PNGs and cameras.json as the renderer writes them."""
    plan = plan_object(settings, object_id, ["forest.exr"])
    folder = Path(root) / object_id
    folder.mkdir(parents=True)
    for view in plan.views:
        pixels = synthetic_view(settings.resolution, view.elevation_deg, view.azimuth_deg, hue)
        Image.fromarray(pixels).save(folder / view.file_name)
    normalization = {"scale": 1.0, "offset": [0.0, 0.0, 0.0], "bbox_min_original": [-0.5] * 3,
                     "bbox_max_original": [0.5] * 3, "faces": 12}
    render_info = {"engine": "synthetic", "device": "cpu", "gpu_backend": None, "blender_version": "none", "seconds": 0.0}
    record = object_record(settings, plan, f"synthetic:{object_id}", normalization, render_info)
    (folder / RECORD_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
    return folder


def write_dataset(root: Path, count: int = 3, settings: RenderSettings = TEST_SETTINGS) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        write_object(root, f"object_{k:03d}", hue=k + 1, settings=settings)
    return root
