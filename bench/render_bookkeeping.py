"""Benchmark: what the renderer's safety costs per object, next to the render itself.

Measures, on this machine: compositing a rendered RGBA view over the exact white background (bpy, per view), the
content id of an object file (SHA-256, MB/s), and the resume check of a done folder (``verify_object_folder``,
per object). At Objaverse scale these run once per object (hash, check) or per view (composite).

    .venv/bin/python bench/render_bookkeeping.py [--resolution 256] [--views 32] [--file-mb 64]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

COMPOSITE = r"""
import sys, time, json
import numpy as np, bpy
from blender_addon.dataset_render import TrainingViewRenderer
from blender_addon.core.render_plan import RenderSettings
folder, resolution, views = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
bpy.ops.wm.read_factory_settings(use_empty=True)
renderer = TrainingViewRenderer(RenderSettings(resolution=resolution), bpy.context.scene)
rng = np.random.default_rng(0)
paths = []
for k in range(views):
    image = bpy.data.images.new(f"view{k}", resolution, resolution, alpha=True)
    pixels = rng.random((resolution * resolution, 4), dtype=np.float32)
    pixels[: resolution * resolution // 2, 3] = 0.0  # half background
    image.pixels.foreach_set(pixels.ravel())
    image.filepath_raw, image.file_format = f"{folder}/view{k}.png", "PNG"
    image.save()
    bpy.data.images.remove(image)
    paths.append(f"{folder}/view{k}.png")
started = time.perf_counter()
for path in paths:
    renderer._composite_over_background(path)
print(json.dumps({"composite_ms_per_view": 1000 * (time.perf_counter() - started) / views}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--views", type=int, default=32)
    parser.add_argument("--file-mb", type=int, default=64)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from blender_addon.core.render_plan import RenderSettings, verify_object_folder
    from tests.helpers.render_format import write_object
    from training.render_inputs import content_id

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    results = {"date": datetime.date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
               f"{os.cpu_count()} cores, {platform.system()} {platform.release()}", "resolution": args.resolution}
    with tempfile.TemporaryDirectory(prefix="iso3d-bench-") as temp:
        out = subprocess.run([sys.executable, "-c", COMPOSITE, temp, str(args.resolution), str(args.views)],
                             check=True, capture_output=True, text=True, env=env, cwd=ROOT)
        results.update(json.loads(out.stdout.strip().splitlines()[-1]))
        big = Path(temp) / "object.glb"
        big.write_bytes(np.random.default_rng(0).bytes(args.file_mb * 2**20))
        content_id(str(big), "warm the page cache")
        started = time.perf_counter()
        content_id(str(big), "settings")
        results["content_id_mb_per_s"] = args.file_mb / (time.perf_counter() - started)
        settings = RenderSettings(resolution=args.resolution)
        folders = [write_object(Path(temp) / "done", f"object_{k}", hue=k, settings=settings) for k in range(10)]
        started = time.perf_counter()
        for folder in folders:
            assert verify_object_folder(str(folder), settings, folder.name) is None
        results["resume_check_ms_per_object"] = 1000 * (time.perf_counter() - started) / len(folders)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
