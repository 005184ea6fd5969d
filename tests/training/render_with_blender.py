"""Renders one small object with the real training-data renderer (bpy): ``python render_with_blender.py OUT``.

Run in its own process, as the renderer's workers run (bpy and torch are kept apart). An OBJ box, 64x64 pixels,
8 fixed + 4 random views, Cycles with few samples: a few seconds."""

from __future__ import annotations

import os
import sys

import bpy

from blender_addon.dataset_render import TrainingViewRenderer
from blender_addon.core.render_plan import RenderSettings

BOX_OBJ = """v -0.5 -0.3 -0.2
v 0.5 -0.3 -0.2
v 0.5 0.3 -0.2
v -0.5 0.3 -0.2
v -0.5 -0.3 0.2
v 0.5 -0.3 0.2
v 0.5 0.3 0.2
v -0.5 0.3 0.2
f 1 4 3 2
f 5 6 7 8
f 1 2 6 5
f 2 3 7 6
f 3 4 8 7
f 4 1 5 8
"""


def main(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    source = os.path.join(out_dir, "..", "box.obj")
    with open(source, "w", encoding="utf-8") as handle:
        handle.write(BOX_OBJ)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    settings = RenderSettings(resolution=64, fixed_views=8, random_views=4, samples=2, denoise=False, threads=2)
    renderer = TrainingViewRenderer(settings, bpy.context.scene)
    renderer.render_file(source, "box", out_dir)


if __name__ == "__main__":
    main(sys.argv[1])
