"""What the CUDA sampler's pruning leaves of a step's field samples, estimated on any machine.

nerfacc's ``OccGridEstimator.sampling`` (the CUDA renderer) marches a ray through occupied grid cells and drops a
sample whose alpha is below ``renderer.alpha_threshold`` (0.01) or that lies past the point where the ray's
transmittance fell below ``renderer.early_stop_eps`` (1e-4), as the reference does (docs/reference-fidelity.md).
Its CUDA extension does not run on a CPU, where the renderer keeps every sample in an occupied cell. This script
fits the field to bench/generate.py's known object for ``--steps`` steps (the trajectory benchmark's loss), then
takes one phase-2 batch of training views, samples it as the CPU renderer does, and counts the samples each rule
would keep (alpha = 1 - exp(-density * step length); transmittance before the sample).

    python bench/sample_budget.py --tiny --device cpu --steps 30
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from backend.diffusion.cameras import random_multiview_cameras
from backend.nerf.presets import preset, set_option
from backend.nerf.rays import camera_rays
from bench.generate import TINY_SETTINGS, build_model
from bench.known_object import TwoSpheres
from bench.trajectory import TrajectoryTrainer


@torch.no_grad()
def kept_samples(trainer, generator) -> dict:
    c = trainer.config
    cameras = random_multiview_cameras(c.phases.objects_after, c.cameras.views_per_object, generator,
                                       c.cameras.elevation_range, c.cameras.azimuth_range, c.cameras.fovy_range,
                                       c.cameras.relative_radius_range)
    size = c.phases.resolution_after
    origins, directions = camera_rays(cameras.c2w.to(trainer.device), cameras.fovy, size, size)
    origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
    ray_id, sample_id, t_starts, t_ends, points, count = trainer.renderer._sample_batched(
        origins, directions, True, torch.Generator(trainer.device).manual_seed(0))
    density = trainer.field.density(points)
    alpha = 1.0 - torch.exp(-density * (t_ends - t_starts)[ray_id, sample_id])
    dense = torch.zeros(origins.shape[0], count, device=points.device)
    dense[ray_id, sample_id] = alpha
    before = torch.cumprod(torch.cat([torch.ones_like(dense[:, :1]), 1.0 - dense[:, :-1]], dim=1), dim=1)
    transmittance = before[ray_id, sample_id]
    r = c.renderer
    by_alpha = alpha >= r.alpha_threshold
    by_transmittance = transmittance >= r.early_stop_eps
    rays = origins.shape[0]
    return {"rays": rays, "occupied_cell_samples": int(points.shape[0]),
            "kept_alpha_threshold_only": int(by_alpha.sum()),
            "kept_early_stop_only": int(by_transmittance.sum()),
            "kept_alpha_threshold_and_early_stop": int((by_alpha & by_transmittance).sum()),
            "alpha_threshold": r.alpha_threshold, "early_stop_eps": r.early_stop_eps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--preset", default=None, help="default: tiny with --tiny, else fast")
    parser.add_argument("--steps", type=int, default=30, help="fitting steps before counting")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    model = build_model(argparse.Namespace(tiny=args.tiny, compile="off"), device)
    config = preset(args.preset or ("tiny" if args.tiny else "fast"))
    config.run.steps = args.steps
    config.run.mesh_every = config.run.views_every = config.run.checkpoint_every = 0
    for key, value in (TINY_SETTINGS if args.tiny else {}).items():
        set_option(config, key, value)
    context = torch.randn(1, 1, model.unet_context_dim, generator=torch.Generator().manual_seed(1)).to(device)
    with tempfile.TemporaryDirectory() as workdir:
        trainer = TrajectoryTrainer(config, model, context, workdir, device, target=TwoSpheres())
        while trainer.step < config.run.steps:
            trainer.train_step()
        counts = kept_samples(trainer, torch.Generator().manual_seed(7))
    counts.update(preset=args.preset or ("tiny" if args.tiny else "fast"), fitted_steps=args.steps,
                  device=str(device), torch=torch.__version__)
    print(json.dumps(counts, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
