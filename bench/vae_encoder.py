"""The SDS step's VAE encoder forward + backward (the larger part of the step's floor), by cuDNN algorithm choice and
compile mode, at the batches of both phases (issue 18).

    python bench/vae_encoder.py                      # CUDA, the published VAE with random weights, float16
    python bench/vae_encoder.py --device cpu --tiny --repeats 1 --views 1   # smoke run

For each batch (``--views``: 4 = a phase-2 step, 8 = phase 1's 2 objects x 4 views) at ``latent_resolution_input``
(256^2), the encoder as the trainer runs it (``encode_latents`` under the run's autocast, input gradient only) is
timed eager and compiled (Inductor default, channels-last: ``compile_vae_encoder``), each with cuDNN's heuristic
algorithm choice and with ``torch.backends.cudnn.benchmark`` (cuDNN times its algorithms for each new shape once and
keeps the fastest). Medians of wall time with a device synchronisation after each call, in milliseconds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from backend.nerf.presets import GenerateConfig
from bench.floor import encoder_forward_backward, median_ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--views", type=lambda text: [int(v) for v in text.split(",")], default=[4, 8])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--profile", action="store_true",
                        help="also profile the compiled encoder's forward and backward at the first --views batch and "
                             "print its kernels by GPU time")
    parser.add_argument("--variants", action="store_true",
                        help="instead: the compiled encoder's variants (Inductor's channels-last layout forced, the "
                             "mid-block attention as plain matmuls), each timed and profiled")
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode of the compiled encoder (default: the trainer's)")
    args = parser.parse_args(argv)

    from backend.commands.model_options import load_model_from_args
    from backend.diffusion.precision import guidance_autocast_dtype
    from backend.models.acceleration import compile_vae_encoder

    device = torch.device(args.device)
    namespace = argparse.Namespace(checkpoint=None, model="tiny" if args.tiny else "random", device=str(device),
                                   dtype="auto", offline=True, compile="off")
    model = load_model_from_args(namespace)
    compile_vae_encoder(model, args.compile_mode if device.type == "cuda" else None)
    compiled = getattr(model, "vae_encoder_moments", None)
    size = GenerateConfig().guidance.latent_resolution_input
    dtype = next(model.vae.parameters()).dtype
    autocast = device.type == "cuda"
    compute_dtype = guidance_autocast_dtype(dtype)

    if args.variants:
        return variants(args, model, device, size, compute_dtype, autocast)
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "date": datetime.date.today().isoformat(), "torch": torch.__version__, "size": size,
               "weights_dtype": str(dtype), "rows": []}
    for views in args.views:
        images = torch.rand(views, 3, size, size, device=device) * 2 - 1
        for benchmark in (False, True):
            torch.backends.cudnn.benchmark = benchmark
            for name, moments in (("eager", None), ("compiled", compiled)):
                if name == "compiled" and moments is None:
                    continue

                def step(moments=moments):
                    encoder_forward_backward(model, images, moments, compute_dtype, autocast)

                milliseconds = median_ms(step, device, args.warmup, args.repeats)
                row = {"views": views, "encoder": name, "cudnn_benchmark": benchmark,
                       "fwd_bwd_ms": round(milliseconds, 3)}
                results["rows"].append(row)
                print(f"[vae encoder] {row}", flush=True)
    torch.backends.cudnn.benchmark = False
    if args.profile and compiled is not None:
        results["profile"] = kernel_table(model, compiled, args.views[0], size, device, compute_dtype, autocast)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def variants(args, model, device, size, compute_dtype, autocast) -> int:
    """The compiled encoder with Inductor's layout heuristic and SDPA attention (before 2026-12-03), with the
    layout forced, and with the attention plain as well (what runs now): timed, profiled, and each one's input
    gradient against the first's."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    from backend.models.acceleration import compile_vae_encoder

    rows, first_gradients = [], {}
    for name, force_layout, plain_attention in (("Inductor's layout heuristic, SDPA", False, False),
                                                 ("layout forced", True, False),
                                                 ("layout forced, plain attention (the run's)", True, True)):
        model.vae.set_attn_processor(AttnProcessor2_0())
        compile_vae_encoder(model, "default", force_layout=force_layout, plain_attention=plain_attention)
        compiled = model.vae_encoder_moments
        for views in args.views:
            generator = torch.Generator(device).manual_seed(views)  # the same images for every variant
            images = torch.rand(views, 3, size, size, device=device, generator=generator) * 2 - 1

            def step(moments=compiled):
                return encoder_forward_backward(model, images, moments, compute_dtype, autocast)

            torch.manual_seed(0)  # the posterior sample's noise
            gradient = step()
            reference = first_gradients.setdefault(views, gradient)
            difference = float((gradient - reference).abs().max() / reference.abs().max())
            milliseconds = median_ms(step, device, args.warmup, args.repeats)
            kernels = kernel_table(model, compiled, views, size, device, compute_dtype, autocast, top=8) \
                if device.type == "cuda" else {"kernels_ms": float("nan"), "top_kernels": []}
            row = {"variant": name, "views": views, "fwd_bwd_ms": round(milliseconds, 3),
                   "input_gradient_relative_difference": difference, **kernels}
            rows.append(row)
            print(f"[vae encoder variant] {name}: {views} views {milliseconds:.2f} ms, kernels "
                  f"{kernels['kernels_ms']:.2f} ms, input gradient vs the first variant {difference:.1e}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(device), "torch": torch.__version__,
                                         "date": datetime.date.today().isoformat(), "rows": rows}, indent=1) + "\n")
    return 0


def kernel_table(model, moments, views: int, size: int, device: torch.device, compute_dtype, autocast: bool,
                 repeats: int = 10, top: int = 30) -> dict:
    """The GPU kernels of ``repeats`` forward + backward calls of ``moments`` on ``views`` images (recorded by
    backend.profiling.StepProfile, a call a step): their GPU time a call and the ``top`` kernels by total time,
    printed and returned: which kernels make up the encoder's part of the floor."""
    from backend.profiling import StepProfile

    images = torch.rand(views, 3, size, size, device=device) * 2 - 1
    for _ in range(3):
        encoder_forward_backward(model, images, moments, compute_dtype, autocast)
    torch.cuda.synchronize(device)
    profile = StepProfile(device, repeats, top)
    profile.start()
    for _ in range(repeats):
        encoder_forward_backward(model, images, moments, compute_dtype, autocast)
    torch.cuda.synchronize(device)
    summary = profile.stop()
    rows = [{"kernel": kernel["name"], "ms_per_call": round(kernel["ms_total"] / repeats, 4),
             "launches_per_call": round(kernel["calls"] / repeats, 1)} for kernel in summary["top"]]
    total = summary["gpu_busy_ms_per_step"]
    print(f"[vae encoder profile] {views} views: kernels {total:.2f} ms a call", flush=True)
    for row in rows:
        print(f"  {row['ms_per_call']:8.3f} ms  x{row['launches_per_call']:5.1f}  {row['kernel']}", flush=True)
    return {"kernels_ms": total, "top_kernels": rows}

if __name__ == "__main__":
    raise SystemExit(main())
