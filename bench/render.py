"""Benchmark: seconds per object of ``iso3d-render`` against a naive serial one-scene-per-object script.

Both render the same objects with the same settings (default: 16 fixed + 16 random views, 256x256, Cycles CPU,
the default samples, same seed). The naive way is what the public reference scripts do: one fresh Blender
process per object that builds its scene, imports the object and renders every view with no data kept between
renders, serially. Ours: ``iso3d-render`` with worker processes that keep their scene and render data. Prints
seconds per object for both, the ratio, and whether the images are identical.

    .venv/bin/python bench/render.py [--objects 2] [--workers 2] [--samples N] [--resolution 256]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

MAKE_OBJECTS = r"""
import sys, bpy
folder, count = sys.argv[1], int(sys.argv[2])
makers = [
    lambda: bpy.ops.mesh.primitive_monkey_add(),
    lambda: bpy.ops.mesh.primitive_torus_add(major_radius=1.0, minor_radius=0.3),
    lambda: bpy.ops.mesh.primitive_cone_add(vertices=24, radius1=0.8, depth=1.6),
    lambda: bpy.ops.mesh.primitive_uv_sphere_add(segments=48, ring_count=24),
]
for k in range(count):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    makers[k % len(makers)]()
    obj = bpy.context.active_object
    modifier = obj.modifiers.new("subdivide", "SUBSURF")
    modifier.levels = 2
    material = bpy.data.materials.new("paint")
    material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.8, 0.3 + 0.1 * k, 0.2, 1)
    obj.data.materials.append(material)
    bpy.ops.export_scene.gltf(filepath=f"{folder}/object{k}.glb", export_format="GLB", export_apply=True)
"""

# The naive script: a fresh process per object, a new scene, no render data kept between renders, serial.
NAIVE_RENDER_ONE = r"""
import sys, json, bpy
from blender_addon.dataset_render import TrainingViewRenderer
from blender_addon.core.render_plan import RenderSettings
path, object_id, out = sys.argv[1], sys.argv[2], sys.argv[3]
settings = RenderSettings.from_dict(json.loads(sys.argv[4]))
bpy.ops.wm.read_factory_settings(use_empty=True)
renderer = TrainingViewRenderer(settings, bpy.context.scene)
bpy.context.scene.render.use_persistent_data = False
renderer.render_file(path, object_id, out)
"""


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=None, help="default: the renderer's default")
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from blender_addon.core.render_plan import RenderSettings

    settings = RenderSettings(resolution=args.resolution, **({"samples": args.samples} if args.samples else {}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="iso3d-bench-") as temp:
        objects = Path(temp) / "objects"
        objects.mkdir()
        subprocess.run([sys.executable, "-c", MAKE_OBJECTS, str(objects), str(args.objects)], check=True,
                       capture_output=True, env=env)
        files = sorted(objects.glob("*.glb"))

        ours_out = Path(temp) / "ours"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "training.render_cli", str(objects), "--out", str(ours_out),
                        "--workers", str(args.workers), "--resolution", str(settings.resolution),
                        "--samples", str(settings.samples), "--no-progress"], check=True, env=env,
                       capture_output=True, cwd=ROOT)
        ours = (time.perf_counter() - started) / len(files)

        naive_out = Path(temp) / "naive"
        naive_out.mkdir()
        import json

        naive_settings = json.dumps({**settings.to_dict(), "threads": 0})
        # The same object ids as iso3d-render gave (ids are content hashes; seeds derive from them).
        done = json.loads((ours_out / "manifest.json").read_text())["done"]
        ids = {Path(entry["source"]).resolve(): object_id for object_id, entry in done.items()}
        started = time.perf_counter()
        for path in files:
            subprocess.run([sys.executable, "-c", NAIVE_RENDER_ONE, str(path), ids[Path(path).resolve()], str(naive_out),
                            naive_settings], check=True, env=env, capture_output=True, cwd=ROOT)
        naive = (time.perf_counter() - started) / len(files)

        images = sorted(p.relative_to(ours_out) for p in ours_out.glob("*/*.png"))
        identical = len(images) == settings.views_per_object * len(files) and all(
            np.array_equal(np.asarray(Image.open(ours_out / p)), np.asarray(Image.open(naive_out / p)))
            for p in images
        )
    print(f"machine: {machine()}")
    print(f"date: {datetime.date.today().isoformat()}")
    print(f"objects: {len(files)}, views per object: {settings.views_per_object}, "
          f"{settings.resolution}x{settings.resolution}, Cycles CPU, {settings.samples} samples, "
          f"denoise {settings.denoise}")
    print(f"naive serial one-scene-per-object: {naive:.1f} s/object")
    print(f"iso3d-render --workers {args.workers}: {ours:.1f} s/object")
    print(f"speed-up: {naive / ours:.2f}x")
    print(f"identical images for the same seed: {'yes' if identical else 'NO'}")


if __name__ == "__main__":
    main()
