"""Guidance precision benchmark: the x0 target's error against float32 and the UNet call time, per precision.

    python bench/guidance_precision.py                          # CUDA, the published UNet size, random weights
    python bench/guidance_precision.py --tiny --device cpu      # smoke run at the tiny size

Each precision is a (weights dtype, autocast dtype) pair, as the SDS trainer runs the guidance UNet:

- ``float16``: float16 weights under float16 autocast (``iso3d generate --dtype float16``);
- ``float32+fp16-autocast``: float32 weights under float16 autocast (the reference's ``precision: 16-mixed``;
  ``--dtype float32``);
- ``bfloat16``: bfloat16 weights under bfloat16 autocast (``--dtype bfloat16``);
- ``float16-no-autocast``: float16 weights, no autocast (norms and softmax in float16 too), for comparison.

The reference is float32 weights without autocast, TF32 off. For t = 980 and t = 500 it prints the mean and the
99.9th percentile of |x0 - x0_fp32| of the SDS x0 target (CFG 10, ``recon_std_rescale`` 0.5, as
backend.diffusion.sds computes it) for 2 objects x 4 views, and the milliseconds of one [uncond; cond] UNet call for
1 object x 4 views (batch 8) run eagerly and replayed from a captured CUDA graph (what ``--compile cudagraphs``
removes: the launch overhead; inductor's fusion comes on top of it).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from backend.diffusion.cameras import encode_cameras, orbit_azimuths
from backend.models.schedule import schedule_buffers
from backend.diffusion.sds import guided_noise, x0_reconstruction_target
from backend.models.configs import published_configs, tiny_configs
from backend.models.mv_unet import MultiViewUNet

PRECISIONS = {
    "float16": (torch.float16, torch.float16),
    "float32+fp16-autocast": (torch.float32, torch.float16),
    "bfloat16": (torch.bfloat16, torch.bfloat16),
    "float16-no-autocast": (torch.float16, None),
}
GUIDANCE_SCALE = 10.0
STD_RESCALE = 0.5


def inputs(objects: int, views: int, context_dim: int, device, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    n = objects * views
    latents = torch.randn(n, 4, 32, 32, generator=generator)  # SD latents x 0.18215 have a std of about 1
    noise = torch.randn(n, 4, 32, 32, generator=generator)
    context = torch.randn(objects, 1, context_dim, generator=generator).repeat_interleave(views, 0) * 0.5
    cameras = encode_cameras([15.0] * n, orbit_azimuths(views) * objects)
    return latents.to(device), noise.to(device), context.to(device), cameras.float().to(device)


def x0_target(unet, weights_dtype, autocast_dtype, latents, noise, context, cameras, t_value, alphas, views):
    device = latents.device
    alpha = alphas.to(device)[t_value]
    noisy = alpha.sqrt() * latents + (1.0 - alpha).sqrt() * noise
    t = torch.full((latents.shape[0],), t_value, device=device, dtype=torch.long)
    with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                         enabled=autocast_dtype is not None):
        guided, cond = guided_noise(unet, noisy.to(weights_dtype), t, context.to(weights_dtype), cameras, views,
                                    GUIDANCE_SCALE)
    return x0_reconstruction_target(noisy, guided.float(), cond.float(), alpha, views, STD_RESCALE)


def time_call(fn, device, repeats: int) -> float:
    """Median milliseconds of ``fn()``."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000.0)
    return sorted(times)[len(times) // 2]


def graph_replay_ms(unet, weights_dtype, autocast_dtype, rows, t, context, cameras, views, repeats) -> float:
    """Median ms of replaying one captured CUDA graph of the [uncond; cond] call."""
    static = [rows.clone(), t.clone(), context.clone(), cameras.clone()]

    def call():
        with torch.no_grad(), torch.autocast("cuda", dtype=autocast_dtype or torch.float32,
                                             enabled=autocast_dtype is not None, cache_enabled=False):
            return guided_noise(unet, static[0], static[1], static[2], static[3], views, GUIDANCE_SCALE)

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    return time_call(graph.replay, torch.device("cuda"), repeats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the tiny UNet (smoke run)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--compile", default="", help="comma-separated precisions also timed compiled as "
                        "`--compile cudagraphs` runs them (torch.compile reduce-overhead, about a minute each)")
    parser.add_argument("--time-budget", type=float, default=240.0,
                        help="seconds after which no further compile is started")
    args = parser.parse_args()
    device = torch.device(args.device)
    started = time.monotonic()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    configs = tiny_configs() if args.tiny else published_configs()
    torch.manual_seed(0)
    with torch.device(device):
        reference = MultiViewUNet.from_ldm_config(configs["unet"]).eval().requires_grad_(False)
    alphas = schedule_buffers()["alphas_cumprod"].float()
    context_dim = configs["unet"]["context_dim"]
    views = 4
    latents, noise, context, cameras = inputs(2, views, context_dim, device)
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "unet": "tiny" if args.tiny else "published size, random weights",
               "x0_error": {}, "ms_per_call": {}}
    timesteps = (980, 500)
    truth = {t: x0_target(reference, torch.float32, None, latents, noise, context, cameras, t, alphas, views)
             for t in timesteps}
    for t in timesteps:
        print(f"float32 reference x0 at t={t}: mean |x0| {truth[t].abs().mean().item():.4f}")
    unets = {torch.float32: reference}
    one = slice(0, views)
    for name, (weights_dtype, autocast_dtype) in PRECISIONS.items():
        unet = unets.get(weights_dtype)
        if unet is None:
            unet = unets[weights_dtype] = copy.deepcopy(reference).to(weights_dtype)
        errors = {}
        for t in timesteps:
            x0 = x0_target(unet, weights_dtype, autocast_dtype, latents, noise, context, cameras, t, alphas, views)
            delta = (x0 - truth[t]).abs().flatten()
            errors[str(t)] = {"mean": delta.mean().item(), "p999": delta.quantile(0.999).item() if delta.numel()
                              <= 16_000_000 else float("nan"), "finite": bool(torch.isfinite(x0).all())}
        results["x0_error"][name] = errors
        print(f"{name:24s} mean |dx0| t=980 {errors['980']['mean']:.5f} (p99.9 {errors['980']['p999']:.4f})  "
              f"t=500 {errors['500']['mean']:.5f} (p99.9 {errors['500']['p999']:.4f})", flush=True)
        t = torch.full((views,), 500, device=device, dtype=torch.long)

        def eager():
            with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                                 enabled=autocast_dtype is not None):
                guided_noise(unet, latents[one].to(weights_dtype), t, context[one].to(weights_dtype),
                             cameras[one], views, GUIDANCE_SCALE)

        timing = {"eager": time_call(eager, device, args.repeats)}
        if device.type == "cuda":
            timing["cuda_graph"] = graph_replay_ms(unet, weights_dtype, autocast_dtype,
                                                   latents[one].to(weights_dtype), t,
                                                   context[one].to(weights_dtype), cameras[one], views, args.repeats)
        results["ms_per_call"][name] = timing
        print(f"{name:24s} ms per [uncond; cond] call, 1x4 views: "
              + ", ".join(f"{k} {v:.2f}" for k, v in timing.items()), flush=True)
    for name in filter(None, args.compile.split(",")):
        if time.monotonic() - started > args.time_budget:
            print(f"{name}: compiled timing skipped (time budget spent)", flush=True)
            continue
        from types import SimpleNamespace

        from backend.models.acceleration import accelerate_for_inference

        weights_dtype, autocast_dtype = PRECISIONS[name]
        holder = accelerate_for_inference(SimpleNamespace(unet=unets[weights_dtype], eager_unet=None),
                                          "reduce-overhead", channels_last=True)
        t = torch.full((views,), 500, device=device, dtype=torch.long)

        def compiled():
            with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                                 enabled=autocast_dtype is not None):
                guided_noise(holder.unet, latents[one].to(weights_dtype), t, context[one].to(weights_dtype),
                             cameras[one], views, GUIDANCE_SCALE)

        compile_start = time.monotonic()
        compiled()
        results["ms_per_call"][name]["compiled_cudagraphs"] = ms = time_call(compiled, device, args.repeats)
        print(f"{name:24s} compiled with CUDA graphs: {ms:.2f} ms per call "
              f"(compiled in {time.monotonic() - compile_start:.0f} s)", flush=True)
    if device.type == "cuda":
        results["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
