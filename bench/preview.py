"""Benchmark of the 4-view preview at the published model sizes (random weights).

Prints: one multi-view UNet forward (batch 8 = 4 views x [uncond; cond], 32x32 latents) and one whole preview
(CLIP + 50 DDIM steps with CFG + VAE decode of 4 views at 256x256) with peak GPU memory, for each mode:
eager fp32, eager bf16, and the accelerated modes (fused q/k/v, channels-last, torch.compile, CUDA graphs). The
accelerated UNet's output is compared with the eager one of the same dtype.

    python bench/preview.py                     # CUDA, published sizes
    python bench/preview.py --tiny --device cpu # a quick check that it runs
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from backend.diffusion.preview import PreviewSettings, generate_preview
from backend.models.acceleration import accelerate_for_inference
from backend.models.multiview_model import build_random_published_model, build_tiny_model
from backend.models.vae import decode_latents


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls (after the caller's warm-up)."""
    samples = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def unet_inputs(model, device, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    context_dim = model.unet.config.cross_attention_dim
    size = model.unet.config.sample_size
    x = torch.randn(8, 4, size, size, generator=generator).to(device, dtype)
    t = torch.full((8,), 500, device=device, dtype=torch.long)
    context = torch.cat([torch.zeros(4, 1, context_dim), torch.randn(4, 1, context_dim, generator=generator)])
    camera = torch.randn(8, 16, generator=generator)
    return x, t, context.to(device, dtype), camera.to(device, dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny model (for a quick CPU check)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--modes",
        default="eager-fp32,eager-bf16,compile-bf16,compile-cudagraphs-bf16",
        help="comma-separated: eager-fp32, eager-bf16, compile-bf16, compile-cudagraphs-bf16",
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    base = build_tiny_model() if args.tiny else build_random_published_model(device=device)
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1)) * 2 - 1
    settings = PreviewSettings(steps=args.steps, seed=0)
    info = {
        "model": base.name + (" tiny" if args.tiny else ""),
        "unet_parameters": sum(p.numel() for p in base.unet.parameters()),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "steps": args.steps,
        "modes": {},
    }
    print(json.dumps({k: v for k, v in info.items() if k != "modes"}))
    eager_outputs = {}
    for mode in args.modes.split(","):
        dtype = torch.float32 if mode.endswith("fp32") else torch.bfloat16
        model = build_tiny_model() if args.tiny else base
        model.to(device=device, dtype=dtype)
        if model.eager_unet is not None:  # undo an earlier mode's compile
            model.unet = model.eager_unet
        if mode.startswith("compile"):
            accelerate_for_inference(model, "reduce-overhead" if "cudagraphs" in mode else "default")
        x, t, context, camera = unet_inputs(model, device, dtype)

        def forward():
            torch.compiler.cudagraph_mark_step_begin()
            return model.unet(x, t, context=context, camera=camera, num_frames=4)

        with torch.no_grad():
            started = time.perf_counter()
            out = forward().float().clone()
            synchronize(device)
            first_call = time.perf_counter() - started
            for _ in range(2):
                forward()
            unet_seconds = time_call(forward, device, args.repeats * 4)
            if mode.startswith("eager"):
                eager_outputs[dtype] = out
            reference = eager_outputs.get(dtype)
            relative_error = (
                ((out - reference).abs().max() / reference.abs().max()).item() if reference is not None else None
            )

        generate_preview(model, image, settings)  # warm-up (CLIP/VAE kernels, cuDNN choices)
        with torch.no_grad():
            clip_seconds = time_call(lambda: model.encode_image(image), device, args.repeats)
            latents = torch.randn(4, 4, 32, 32, device=device)
            decode_seconds = time_call(lambda: decode_latents(model.vae, latents), device, args.repeats)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        preview_seconds = time_call(lambda: generate_preview(model, image, settings), device, max(1, args.repeats // 2))
        peak_gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        figures = {
            "unet_forward_ms": round(unet_seconds * 1000, 2),
            "first_call_s": round(first_call, 1),
            "preview_s": round(preview_seconds, 3),
            "clip_ms": round(clip_seconds * 1000, 2),
            "vae_decode_ms": round(decode_seconds * 1000, 2),
            "peak_memory_gib": round(peak_gib, 2) if peak_gib is not None else None,
            "unet_max_rel_error_vs_eager_same_dtype": None if relative_error is None else float(f"{relative_error:.2e}"),
        }
        info["modes"][mode] = figures
        print(json.dumps({"mode": mode, **figures}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
