"""The memory plan's estimates (backend.nerf.memory) of the presets at the published model sizes: its parts and,
per preset and cap, each phase's setting and estimate.

    python bench/memory_plan.py                                # a CPU: fast and reference, uncapped, 12, 16, 24 GiB
    python bench/memory_plan.py --caps 10,20 --presets draft,fast
    python bench/memory_plan.py --device cuda --caps 12,20     # a GPU: measured on the run's path

On a CPU the UNet and image encoder are built on the meta device (their float16 bytes counted, nothing allocated);
the VAE and the field are real (random weights) and measured by saved tensors on the plain-torch code in float32
without autocast: above what a CUDA run's compiled field and float16-autocast encoder hold (an upper bound).

``--device cuda`` builds the model as ``iso3d generate --model random`` does on that device (float16, the UNet
compiled with CUDA graphs, the VAE encoder compiled) and plans as a run there plans: the field compiled with the
fused hash grid and the compiled VAE encoder at each phase's batch measured through the allocator
(backend.nerf.memory_measure). It prints the measured bytes: a field sample kept beside the guidance and at its own
peak, the fixed part, each phase's VAE encoder a view. Compiling the field and the encoder for three batch shapes
takes a few minutes; nothing is trained. Per preset and cap: each phase's setting (VAE encoder plain or
checkpointed in chunks, sample budget) and estimate, and the run's estimate, or the refusal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from backend.models.configs import published_configs
from backend.models.multiview_model import MultiViewDiffusionModel, build_modules
from backend.models.vae import build_vae
from backend.nerf.memory import UNET_RESERVE_GIB, plan_memory
from backend.nerf.presets import preset


def published_model_for_planning() -> MultiViewDiffusionModel:
    """UNet and image encoder on the meta device in float16 (as a CUDA run holds them), a real float32 VAE."""
    configs = published_configs()
    unet, _, image_encoder = build_modules(configs, device="meta")
    torch.manual_seed(0)
    vae = build_vae(configs["vae"])
    model = MultiViewDiffusionModel(unet.half(), vae, image_encoder.half(), configs, name="published (planning)",
                                    trained=False)
    return model.eval()


def model_on(device: torch.device) -> MultiViewDiffusionModel:
    if device.type != "cuda":
        return published_model_for_planning()
    from backend.commands.model_options import load_model_from_args

    return load_model_from_args(argparse.Namespace(checkpoint=None, model="random", device=str(device), dtype="auto",
                                                   offline=True, compile="auto"))


def describe_parts(plan) -> str:
    vae = ", ".join(f"phase {p.number} {p.vae_gib_per_view:.3f}" for p in plan.phases)
    return (f"base {plan.base_gib:.2f} GiB + UNet reserve {plan.unet_reserve_gib:.1f} GiB; a field sample "
            f"{plan.bytes_per_sample:.0f} B kept / {plan.bytes_per_sample_peak:.0f} B at its peak "
            f"(+ {plan.sample_fixed_bytes / 2**20:.0f} MiB fixed; {plan.measured_by}), "
            f"{plan.bytes_per_sample_checkpointed:.0f} B checkpointed; VAE encoder GiB a view: {vae}")


def unet_call_gib(model, config, views: int, device: torch.device) -> tuple[float, float]:
    """(GiB still held after, GiB at the peak) above what was allocated before, of the guidance UNet's [uncond; cond]
    call for ``views`` views as the SDS step makes it (no gradients, the run's autocast), its second call (the first
    compiles and records the CUDA graph): what the plan's UNet reserve stands for, which the plan does not measure
    (its own call would record the run's graphs out of the run)."""
    from backend.diffusion.cameras import DEFAULT_CAMERA_ENCODING, random_multiview_cameras
    from backend.diffusion.precision import guidance_autocast_dtype
    from backend.diffusion.sds import guided_noise

    eager = getattr(model, "eager_unet", None) or model.unet
    dtype = next(eager.parameters()).dtype
    c = config.cameras
    cameras = random_multiview_cameras(views // c.views_per_object, c.views_per_object, torch.Generator().manual_seed(0),
                                       c.elevation_range, c.azimuth_range, c.fovy_range, c.relative_radius_range)
    codes = cameras.codes(getattr(model, "camera_encoding", DEFAULT_CAMERA_ENCODING)).to(device)
    latent = config.guidance.latent_resolution_input // 8
    noisy = torch.randn(views, model.vae.config.latent_channels, latent, latent, device=device).to(dtype)
    t = torch.randint(20, 980, (1,), device=device).expand(views)
    context = torch.zeros(1, 1, eager.config.cross_attention_dim, device=device).expand(views, -1, -1).to(dtype)
    autocast = guidance_autocast_dtype(dtype) if config.run.mixed_precision else None

    def call() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=autocast or dtype, enabled=autocast is not None):
            guided_noise(model.unet, noisy, t, context, codes, c.views_per_object, config.guidance.guidance_scale)
        torch.cuda.synchronize(device)

    before = torch.cuda.memory_allocated(device)
    call()
    held = torch.cuda.memory_allocated(device) - before
    torch.cuda.reset_peak_memory_stats(device)
    call()
    return held / 2**30, (torch.cuda.max_memory_allocated(device) - before) / 2**30


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="fast,reference")
    parser.add_argument("--caps", default="12,16,24", help="GiB, comma-separated (the uncapped plan is printed too)")
    parser.add_argument("--device", default="cpu", help="cpu (planned for CUDA) or cuda (measured there)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    model = model_on(device)
    planned_for = "cuda" if device.type == "cpu" else None
    for name in args.presets.split(","):
        for cap in [0.0] + [float(c) for c in args.caps.split(",")]:
            config = preset(name)
            config.run.max_gpu_memory = cap
            plan = plan_memory(config, model, device, planned_for=planned_for)
            label = f"{name} at {cap:g} GiB" if cap else f"{name} uncapped"
            if cap == 0.0:
                print(f"{name} parts: {describe_parts(plan)}")
            if not plan.fits:
                print(f"{label}: refused (needs {plan.need_gib(True):.1f} GiB with everything checkpointed)")
                continue
            print(f"{label}: estimate {plan.estimate_gib:.1f} GiB")
            print("    " + plan.describe().replace("\n", "\n    "))
    if device.type == "cuda":
        config = preset(args.presets.split(",")[0])
        for views in sorted({config.phases.objects_before * config.cameras.views_per_object,
                             config.phases.objects_after * config.cameras.views_per_object}):
            held, peak = unet_call_gib(model, config, views, device)
            print(f"guidance UNet call for {views} views: {held:.2f} GiB held after, {peak:.2f} GiB at its peak "
                  f"(the plan's reserve: {UNET_RESERVE_GIB} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
