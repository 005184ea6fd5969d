"""Finishing benchmark: seconds to finish a ~200k-face surface to 20k faces with a 1024^2 baked texture.

    python bench/finish.py                  # CPU
    python bench/finish.py --device cuda    # GPU (field queries and texture rasterisation on the GPU)

The field: density is an analytic wrinkled sphere (cheap, so marching cubes at ``--resolution`` 240 gives about
200k faces in seconds even on a CPU), albedo comes from the ``fast`` preset's RadianceField with seeded random
weights (the real cost of baking: one field query per texel). Prints one JSON line: seconds per stage (extract,
cleanup, decimate, unwrap, bake, encode), the total and the total after extraction (finishing a given surface),
the surface and result face counts, the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from backend.finishing.pipeline import FinishOptions, finish_field
from backend.nerf.field import RadianceField
from backend.nerf.presets import preset


class WrinkledSphereField(torch.nn.Module):
    """Density ~60 inside a wrinkled sphere of radius ~0.6 (surface at 30); albedo from a RadianceField."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.albedo_field = RadianceField(preset("fast").field)
        self.radius = self.albedo_field.radius

    def density(self, points: torch.Tensor) -> torch.Tensor:
        wrinkles = 0.04 * torch.sin(9 * points[:, 0]) * torch.sin(9 * points[:, 1]) * torch.sin(9 * points[:, 2])
        return 60.0 * torch.sigmoid((0.6 + wrinkles - points.norm(dim=-1)) * 60.0)

    def forward(self, points: torch.Tensor, with_normals: bool = False):
        return self.density(points), self.albedo_field(points)[1], None


def bench_field(device: str) -> WrinkledSphereField:
    field = WrinkledSphereField().to(device).eval()
    if torch.device(device).type == "cuda":
        field.albedo_field.use_compiled()
    return field


def machine(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=240, help="marching-cubes cells a side (240: ~200k faces)")
    parser.add_argument("--threshold", type=float, default=30.0, help="surface density (1/world-unit)")
    parser.add_argument("--faces", type=int, default=20000)
    parser.add_argument("--texture", type=int, default=1024)
    parser.add_argument(
        "--warmup", action="store_true", help="run the same finishing once first (torch.compile, caches); time the second"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    field = bench_field(args.device)
    options = FinishOptions(faces=args.faces, texture=args.texture, formats=("glb",), resolution=args.resolution,
                            threshold=args.threshold)
    if args.warmup:  # at the timed sizes: a smaller warm-up leaves the compiled field to recompile for these shapes
        finish_field(field, options)
    start = time.perf_counter()
    result = finish_field(field, options)
    if torch.device(args.device).type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - start
    print(json.dumps({
        "seconds": round(total, 2), "seconds_after_extract": round(total - result.seconds["extract"], 2),
        "stages": {k: round(v, 2) for k, v in result.seconds.items()},
        "surface_faces": result.surface_faces, "faces": result.levels[0].faces, "texture": args.texture,
        "resolution": args.resolution, "device": args.device, "machine": machine(args.device),
        "date": datetime.date.today().isoformat(),
    }))


if __name__ == "__main__":
    main()
