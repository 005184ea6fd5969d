"""Benchmark: applying a streamed 200k-face mesh to a Blender object in place (blender_addon.scene_sync).

Prints the median milliseconds of replacing the object's mesh (vertices, triangles, vertex colours) with bpy's
``foreach_set``, as the add-on does for every intermediate mesh, and of applying a finished asset (the same mesh
with corner UVs, plus a baked texture PNG written, loaded, packed and wired into the material), as the Finish
section does. Run: python bench/apply_mesh.py [--faces N] [--texture 1024]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np


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
    parser.add_argument("--texture", type=int, default=1024, help="texels a side of the finished asset's texture")
    args = parser.parse_args()
    import bpy

    import tempfile

    from blender_addon.scene_sync import apply_finished_mesh, apply_mesh, load_texture_image
    from backend.service.messages import png_bytes

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

    # A finished asset: corner UVs from the sphere's angles, a smooth texture as the baker makes (PNG as streamed).
    corner_uvs = np.stack([np.arctan2(vertices[:, 1], vertices[:, 0]) / (2 * np.pi) + 0.5,
                           np.arccos(np.clip(vertices[:, 2], -1, 1)) / np.pi], -1).astype(np.float32)[faces]
    ramp = np.linspace(0, 255, args.texture, dtype=np.float32)
    texture = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 128.0), -1).astype(np.uint8)
    png = png_bytes(texture, compress_level=6)
    finished = []
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            started = time.perf_counter()
            image = load_texture_image("bench baked", png, folder)
            apply_finished_mesh(bpy.data.objects["bench"], vertices, faces, colours, corner_uvs, image, "job")
            finished.append(time.perf_counter() - started)
    assert len(mesh.uv_layers.active.data) == faces.size and tuple(image.size) == (args.texture, args.texture)
    print(
        json.dumps(
            {
                "faces": len(faces),
                "vertices": len(vertices),
                "apply_ms_median": round(sorted(samples)[len(samples) // 2] * 1000, 1),
                "apply_ms_min": round(min(samples) * 1000, 1),
                "texture": args.texture,
                "apply_finished_ms_median": round(sorted(finished)[len(finished) // 2] * 1000, 1),
                "bpy": bpy.app.version_string,
                "cpu": platform.processor() or platform.machine(),
                "date": time.strftime("%Y-%m-%d"),
            }
        )
    )


if __name__ == "__main__":
    main()
