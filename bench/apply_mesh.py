"""Benchmark: applying a streamed 200k-face mesh to a Blender object in place (blender_addon.scene_sync).

Prints the median milliseconds of replacing the object's mesh (vertices, triangles, vertex colours) with bpy's
``foreach_set``, as the add-on does for every intermediate mesh. Run: python bench/apply_mesh.py [--faces N]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def grid_sphere(faces_wanted: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A closed-ish UV sphere with about ``faces_wanted`` triangles."""
    rows = int(np.sqrt(faces_wanted / 4))
    columns = 2 * rows
    theta = np.linspace(0, np.pi, rows + 1)
    phi = np.linspace(0, 2 * np.pi, columns, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    vertices = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)
    index = np.arange((rows + 1) * columns).reshape(rows + 1, columns)
    a, b = index[:-1], np.roll(index, -1, axis=1)[:-1]
    c, d = index[1:], np.roll(index, -1, axis=1)[1:]
    faces = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)])
    colours = ((vertices * 0.5 + 0.5) * 255).astype(np.uint8)
    return vertices.astype(np.float32), faces.astype(np.int32), colours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    import bpy

    from blender_addon.scene_sync import apply_mesh

    bpy.ops.wm.read_factory_settings(use_empty=True)
    vertices, faces, colours = grid_sphere(args.faces)
    apply_mesh("bench", vertices, faces, colours)  # first call creates the object and material
    samples = []
    for repeat in range(args.repeats):
        jitter = vertices * (1 + 0.01 * repeat)
        started = time.perf_counter()
        apply_mesh("bench", jitter, faces, colours)
        samples.append(time.perf_counter() - started)
    mesh = bpy.data.objects["bench"].data
    assert len(mesh.polygons) == len(faces) and len(mesh.vertices) == len(vertices)
    print(
        json.dumps(
            {
                "faces": len(faces),
                "vertices": len(vertices),
                "apply_ms_median": round(sorted(samples)[len(samples) // 2] * 1000, 1),
                "apply_ms_min": round(min(samples) * 1000, 1),
                "bpy": bpy.app.version_string,
                "cpu": platform.processor() or platform.machine(),
                "date": time.strftime("%Y-%m-%d"),
            }
        )
    )


if __name__ == "__main__":
    main()
