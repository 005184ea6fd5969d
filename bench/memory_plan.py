"""The memory plan's estimates (backend.nerf.memory) of the presets at the published model sizes, on a CPU.

    python bench/memory_plan.py                      # fast and reference, uncapped and at 12, 16 and 24 GiB
    python bench/memory_plan.py --caps 10,20 --presets draft,fast

The UNet and image encoder are built on the meta device (their float16 bytes counted, nothing allocated); the VAE
and the field are real (random weights) so that their saved bytes are measured as a CUDA run measures them, except
that here the VAE runs in float32 without autocast: its figure is an upper bound of the float16-autocast one a CUDA
run measures (about 1.2x: float32 convolution inputs instead of float16). Per preset and cap: each phase's setting
(VAE encoder plain or checkpointed in chunks, sample budget) and estimate, and the run's estimate, or the refusal.
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
from backend.nerf.memory import plan_memory
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="fast,reference")
    parser.add_argument("--caps", default="12,16,24", help="GiB, comma-separated (the uncapped plan is printed too)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = published_model_for_planning()
    cpu = torch.device("cpu")
    for name in args.presets.split(","):
        for cap in [0.0] + [float(c) for c in args.caps.split(",")]:
            config = preset(name)
            config.run.max_gpu_memory = cap
            plan = plan_memory(config, model, cpu, planned_for="cuda")
            label = f"{name} at {cap:g} GiB" if cap else f"{name} uncapped"
            if not plan.fits:
                print(f"{label}: refused (needs {plan.need_gib(True):.1f} GiB with everything checkpointed)")
                continue
            print(f"{label}: estimate {plan.estimate_gib:.1f} GiB (base {plan.base_gib:.2f} GiB, "
                  f"{plan.bytes_per_sample:.0f} / {plan.bytes_per_sample_checkpointed:.0f} bytes a sample plain / "
                  f"checkpointed, VAE {plan.phases[0].vae_gib_per_view:.3f} / "
                  f"{plan.phases[0].vae_checkpointed_gib_per_view:.4f} GiB a view)")
            print("    " + plan.describe().replace("\n", "\n    "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
