"""SDS benchmark: ms per step in each phase, the step's floor, peak memory, and the wall time of a reference run.

    python bench/sds.py                      # CUDA, published model sizes with random weights
    python bench/sds.py --full               # also run the whole `reference` preset end to end (wall time)
    python bench/sds.py --tiny --device cpu  # smoke run at tiny sizes

Variants: ``--normals analytic,finite_difference`` (``autograd``, the double backward, is seconds per step), each
with the eager UNet (float32 weights under bf16 autocast, as `iso3d generate` by default) and, with
``--unet eager,cudagraphs``, with the guidance UNet in bf16 compiled with CUDA graphs (`iso3d generate --dtype
bfloat16 --compile cudagraphs`; its first steps compile for about a minute).

``--field blob`` times the steps on the freshly initialised field (the density blob: nearly every sample inside
it is kept, the slowest state, as at the start of a run); ``--field fitted`` first regresses the field onto a
solid sphere (radius 0.35, as an object looks after the first few hundred steps), so rays stop at its surface.

Figures printed:
  - ms per SDS step in phase 1 (2 objects x 4 views at 64^2) and phase 2 (1 x 4 at 256^2), for each variant;
  - the floor of one 256^2 step: one batch-8 UNet forward at 32x32 ([uncond; cond] x 4 views) plus the VAE encoder
    forward and backward of 4 views at 256^2, and the ratio step / floor;
  - mesh extraction time (final resolution), peak GPU memory, and the reference run's wall time (estimated from the
    phase timings, or measured with --full).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from backend.models.vae import encode_latents
from backend.nerf.presets import preset, set_option
from backend.nerf.trainer import SDSTrainer, generate
from bench.floor import median_ms
from bench.trajectory import synchronize


def floor_ms(model, device, resolution: int, repeats: int, warmup: int, autocast: bool) -> dict[str, float]:
    views = 4
    latent = resolution // 8
    context = torch.randn(2 * views, 1, model.unet.config.cross_attention_dim, device=device)
    x = torch.randn(2 * views, 4, latent, latent, device=device)
    t = torch.full((2 * views,), 500, device=device)
    camera = torch.randn(2 * views, 16, device=device)
    images = torch.rand(views, 3, resolution, resolution, device=device) * 2 - 1

    def unet():
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=autocast):
            model.unet(x, t, context=context, camera=camera, num_frames=views)

    def vae():
        source = images.clone().requires_grad_(True)
        with torch.autocast(device.type, torch.bfloat16, enabled=autocast):
            latents = encode_latents(model.vae, source)
        latents.float().square().sum().backward()

    return {"unet": median_ms(unet, device, warmup, repeats), "vae": median_ms(vae, device, warmup, repeats)}


def fit_to_sphere(trainer, device, steps: int = 300) -> None:
    """Regress ``trainer.field`` onto a solid sphere (density 60 inside radius 0.35, grey albedo) and rebuild the
    occupancy grid from it."""
    field = trainer.field
    count = 65536 if device.type == "cuda" else 4096
    optimizer = torch.optim.Adam(field.parameters(), lr=0.01)
    generator = torch.Generator(device=device).manual_seed(0)
    for _ in range(steps):
        points = torch.rand(count, 3, device=device, generator=generator) * 2 - 1
        near = torch.nn.functional.normalize(torch.randn(count, 3, device=device, generator=generator), dim=-1)
        points = torch.cat([points, near * (0.35 + 0.05 * torch.randn(count, 1, device=device, generator=generator))])
        target = 60.0 * torch.sigmoid((0.35 - points.norm(dim=-1)) * 60.0)
        density, albedo, _ = field(points)
        loss = (torch.log1p(density) - torch.log1p(target)).square().mean() + (albedo - 0.6).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        trainer.renderer.grid.occs.zero_()
        trainer.renderer.update_grid(0, field, force=True)  # step 0: every cell, from the fitted field


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny model and CPU-sized settings")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per phase")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--full", action="store_true", help="run the whole reference preset (wall time)")
    parser.add_argument("--profile", action="store_true", help="print where a phase-2 step spends its GPU time")
    parser.add_argument("--normals", default="analytic,finite_difference", help="normals kinds, comma-separated")
    parser.add_argument("--unet", default="eager,cudagraphs", help="guidance UNet: eager and/or cudagraphs")
    parser.add_argument("--field", default="blob", help="field state(s) to time: blob and/or fitted")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: use --tiny --device cpu for a smoke run", file=sys.stderr)
        return 2

    from backend.models.multiview_model import build_random_published_model, build_tiny_model

    model = build_tiny_model(0).to(device) if args.tiny else build_random_published_model(0, device=device)
    config = preset("tiny" if args.tiny else "reference")
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; model: {model.name}; "
          f"torch {torch.__version__}")
    autocast = device.type == "cuda" and config.run.mixed_precision
    context = torch.randn(1, 1, model.unet.config.cross_attention_dim, device=device)
    steps = config.run.steps
    switch = int(config.phases.switch_at * steps)
    results = {}
    normals_kinds = [n.strip() for n in args.normals.split(",") if n.strip()]
    unet_kinds = [u.strip() for u in args.unet.split(",") if u.strip()]
    if device.type != "cuda":
        unet_kinds = ["eager"]
    field_states = [f.strip() for f in args.field.split(",") if f.strip()]
    variants = [(normals, unet, state) for state in field_states for unet in unet_kinds for normals in normals_kinds
                if unet == "eager" or normals == normals_kinds[0]]
    for normals, unet, state in variants:
        set_option(config, "field.normals", normals)
        if unet == "cudagraphs" and getattr(model, "eager_unet", None) is None:
            from backend.models.acceleration import accelerate_for_inference

            model.to(dtype=torch.bfloat16)
            accelerate_for_inference(model, "reduce-overhead")
        label = f"{normals}{' +cudagraphs' if unet == 'cudagraphs' else ''}{' (fitted)' if state == 'fitted' else ''}"
        with tempfile.TemporaryDirectory() as workdir:
            trainer = SDSTrainer(config, model, context, workdir, device)
            if state == "fitted":
                fit_to_sphere(trainer, device)
            phase_1_step = min(config.renderer.grid_warmup_steps + 44, switch - 1)  # past the grid warm-up
            for phase, at in (("phase 1", phase_1_step), ("phase 2", switch + 1)):
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()

                def one_step():
                    trainer.step = at  # the same step (and phase) every time
                    trainer.train_step()

                ms = median_ms(one_step, device, args.warmup, args.steps)
                if args.profile and phase == "phase 2" and (normals, unet, state) == variants[0]:
                    from torch.profiler import ProfilerActivity, profile

                    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
                    with profile(activities=activities) as profiler:
                        for _ in range(3):
                            one_step()
                        synchronize(device)
                    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
                    print(profiler.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60))
                peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
                results[(label, phase)] = ms
                plan = trainer.plan
                print(f"{label:29s} {phase}: {plan.objects}x{config.cameras.views_per_object} views at "
                      f"{plan.resolution}^2: {ms:8.1f} ms/step, peak GPU memory {peak:.2f} GiB")
            start = time.perf_counter()
            mesh = trainer.extract_mesh()
            synchronize(device)
            mesh_s = time.perf_counter() - start
    print(f"final mesh ({config.mesh.resolution}^3 grid, {len(mesh.faces)} faces): {mesh_s:.2f} s")

    floor = floor_ms(model, device, config.guidance.latent_resolution_input, args.steps, args.warmup, autocast)
    total_floor = floor["unet"] + floor["vae"]
    unet_kind = "bf16 compiled + CUDA graphs" if getattr(model, "eager_unet", None) is not None else "eager"
    print(f"floor ({unet_kind} UNet): UNet batch-8 forward {floor['unet']:.1f} ms + VAE encoder fwd+bwd "
          f"4x{config.guidance.latent_resolution_input}^2 {floor['vae']:.1f} ms = {total_floor:.1f} ms")
    if getattr(model, "eager_unet", None) is not None:  # the floor with the eager UNet too, for the eager variants
        compiled, model.unet = model.unet, model.eager_unet
        eager_floor = floor_ms(model, device, config.guidance.latent_resolution_input, args.steps, args.warmup,
                               autocast)
        model.unet = compiled
        print(f"floor (eager bf16 UNet): UNet {eager_floor['unet']:.1f} ms + VAE {eager_floor['vae']:.1f} ms = "
              f"{eager_floor['unet'] + eager_floor['vae']:.1f} ms")
    for (label, phase), _ in results.items():
        if phase != "phase 2":
            continue
        ratio = results[(label, "phase 2")] / total_floor
        estimate = (switch * results[(label, "phase 1")] + (steps - switch) * results[(label, "phase 2")]) / 1e3
        meshes = (steps // config.run.mesh_every) * mesh_s * (config.mesh.preview_resolution / config.mesh.resolution)**3
        print(f"{label:29s}: 256^2 step / floor = {ratio:.2f}; reference run ({steps} steps) ~ "
              f"{(estimate + meshes + mesh_s) / 60:.1f} min (steps {estimate / 60:.1f} min + meshes)")
    if args.full:
        set_option(config, "field.normals", normals_kinds[0])
        with tempfile.TemporaryDirectory() as workdir:
            start = time.perf_counter()
            image = torch.zeros(1, 3, 256, 256, device=device)
            last = None
            for last in generate(model, config, workdir, image=image, device=device):
                pass
            synchronize(device)
            print(f"whole reference run: {(time.perf_counter() - start) / 60:.1f} min, ended with "
                  f"{type(last).__name__}; peak GPU memory "
                  f"{torch.cuda.max_memory_allocated() / 2**30 if device.type == 'cuda' else float('nan'):.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
