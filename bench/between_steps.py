"""What the work between SDS steps costs, part by part, on this machine (CPU or CUDA): an intermediate mesh
(backend.nerf.mesh.extract_mesh split into its parts) and a checkpoint (the trainer's StateSnapshot, checked
equal to the state; torch.save through the atomic helper).

    python bench/between_steps.py --preset fast --device cpu            # a fast-sized field on the CPU
    python bench/between_steps.py --preset tiny --device cpu --repeats 3

The field is the preset's RadianceField at its initial weights (its blob bias makes a closed surface at the
grid's 90th percentile), so the marching-cubes and trimesh parts see a real surface; milliseconds, best of
``--repeats``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mcubes
import numpy as np
import torch
import trimesh

from backend.nerf.between_steps import StateSnapshot
from backend.nerf.field import RadianceField
from backend.nerf.mesh import Mesh, density_grid, drop_small_components, export_mesh
from backend.nerf.presets import preset
from blender_addon.core.atomic_files import open_atomically


def best_ms(function, repeats: int, device: torch.device):
    best, value = float("inf"), None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        value = function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, (time.perf_counter() - start) * 1e3)
    return round(best, 2), value


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threshold", type=float, default=None,
                        help="surface density (1/world-unit; default: the grid's 90th percentile, a closed blob)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    config = preset(args.preset)
    torch.manual_seed(0)
    field = RadianceField(config.field).to(device)
    m, resolution = config.mesh, config.mesh.preview_resolution
    parts: dict[str, float] = {}
    parts["density_grid"], grid = best_ms(lambda: density_grid(field, resolution, m.chunk_points), args.repeats,
                                          device)
    threshold = args.threshold if args.threshold is not None else float(np.percentile(grid, 90))
    parts["marching_cubes"], (vertices, faces) = best_ms(lambda: mcubes.marching_cubes(grid, threshold),
                                                         args.repeats, device)
    vertices = vertices * (2.0 * field.radius / resolution) - field.radius

    def clean():
        mesh = trimesh.Trimesh(vertices, faces.astype(np.int64), process=True)
        mesh = drop_small_components(mesh, m.min_component_fraction)
        if mesh.volume < 0:
            mesh.invert()
        return mesh

    parts["trimesh_process_components_volume"], mesh = best_ms(clean, args.repeats, device)
    points = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=device)
    parts["vertex_colours"], albedo = best_ms(lambda: field(points)[1], args.repeats, device)
    result = Mesh(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int32),
                  (albedo.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy())
    optimizer = torch.optim.AdamW(field.parameters())
    with torch.enable_grad():
        field.density(points).sum().backward()
    optimizer.step()  # the Adam moments exist, as in a run's checkpoint
    with tempfile.TemporaryDirectory() as folder:
        parts["ply_export"], _ = best_ms(lambda: export_mesh(result, Path(folder) / "mesh_latest.ply"), args.repeats,
                                         device)
        state = {"field": field.state_dict(), "optimizer": optimizer.state_dict()}
        parts["finiteness_check_per_parameter"], _ = best_ms(
            lambda: all(torch.isfinite(p).all() for p in field.parameters()), args.repeats, device)
        parts["finiteness_check_one_sync"], _ = best_ms(
            lambda: bool(torch.stack([torch.isfinite(p).all() for p in field.parameters()]).all()), args.repeats,
            device)
        snapshots = StateSnapshot()  # the trainer's: pinned host buffers on CUDA, reused from the second take on
        parts["checkpoint_snapshot_first"], copy = best_ms(lambda: snapshots.take(state, device), 1, device)
        parts["checkpoint_snapshot_reused"], copy = best_ms(lambda: snapshots.take(state, device), args.repeats,
                                                            device)
        for name, tensor in state["field"].items():  # the copy is the state, bit for bit
            assert torch.equal(copy["field"][name], tensor.cpu()), name
        buffer = io.BytesIO()
        torch.save(copy, buffer)

        def write():
            with open_atomically(Path(folder) / "checkpoint.pt") as handle:
                torch.save(copy, handle)

        parts["checkpoint_write_atomic"], _ = best_ms(write, args.repeats, device)
    summary = {"preset": args.preset, "device": str(device), "preview_resolution": resolution,
               "threads": torch.get_num_threads(), "vertices": len(result.vertices), "faces": len(result.faces),
               "checkpoint_mb": round(buffer.tell() / 2**20, 1), "ms": parts}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
