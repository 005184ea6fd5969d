"""What Dynamo's guard checks cost each call of the compiled guidance UNet, with every guard and with the module's
guards left out (``backend.models.acceleration.unet_guard_filter``, issue 18).

    python bench/unet_guards.py                        # CUDA: the published UNet compiled as a run compiles it
    python bench/unet_guards.py --device cpu           # the published UNet's guards on the CPU (Dynamo only)
    python bench/unet_guards.py --tiny --device cpu    # smoke run

Why: in the ``reference`` preset's 256² step, bound by its host, torch.profiler put "TorchDynamo Cache Lookup" at
~0.43 ms a call over ~3 compiled calls a step (bench/RESULTS.md, 2026-12-04, session 14); the UNet's call checks
its inputs and, through the module, each of its ~700 parameters' tensors and thousands of module attributes.

Each variant prepares and compiles the UNet anew as a run does (``accelerate_for_inference``: fused self-attention
projections; on CUDA as ``--compile cudagraphs`` does: channels-last, Inductor with CUDA graphs, float16 weights; on
the CPU Dynamo's graph run by torch ops, float32: Inductor's C++ build of the published UNet would take many minutes)
and calls it at the SDS batch of one object's 4 views (8 rows: uncond and cond). Per variant: the guards Dynamo built
and the ones kept, the profiler's "TorchDynamo Cache Lookup" per call (the guard checks), and the host's time per
call (the host clock around the call, device synchronised before it) as medians. The published UNet is built without
initialising its weights (zeros): the guards and the host's work do not depend on the values.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from diffusers.utils import logging as diffusers_logging

from backend.models.acceleration import accelerate_for_inference, unet_guard_filter
from backend.models.configs import published_configs, tiny_configs
from backend.models.mv_unet import MultiViewUNet
from bench.generate import gpu_label, write_results
from bench.source import source_commit

RESULTS = Path(__file__).resolve().parent / "results"
diffusers_logging.set_verbosity_error()  # its warning on casting a model that has no float32-only modules
VARIANTS = {"all_guards": False, "module_guards_left_out": True}


def build_unet(tiny: bool, device: torch.device, dtype: torch.dtype) -> MultiViewUNet:
    """The UNet on ``device`` in ``dtype``, weights zero (``measure`` prepares and compiles it as a run does)."""
    configs = tiny_configs() if tiny else published_configs()
    with torch.device("meta"):
        unet = MultiViewUNet.from_ldm_config(configs["unet"])
    unet = unet.to_empty(device=device).to(dtype).eval().requires_grad_(False)
    with torch.no_grad():
        for tensor in list(unet.parameters()) + list(unet.buffers()):
            tensor.zero_()
    return unet


def unet_inputs(unet: MultiViewUNet, device: torch.device, dtype: torch.dtype, latent: int, rows: int = 8):
    generator = torch.Generator().manual_seed(0)
    context_dim = unet.config.cross_attention_dim
    camera_dim = unet.class_embedding.linear_1.in_features
    return (torch.randn(rows, 4, latent, latent, generator=generator).to(device, dtype),
            torch.full((rows,), 500, device=device),
            torch.randn(rows, 1, context_dim, generator=generator).to(device, dtype),
            torch.randn(rows, camera_dim, generator=generator).to(device, dtype))


def measure(unet, inputs, device: torch.device, guard_filter: bool, calls: int, profiled: int) -> dict:
    counted = {"built": 0, "kept": 0}

    def counting(entries):
        kept = unet_guard_filter(entries) if guard_filter else [True] * len(entries)
        counted["built"] += len(entries)
        counted["kept"] += sum(kept)
        return kept

    torch._dynamo.reset()
    cuda = device.type == "cuda"  # there as --compile cudagraphs prepares and compiles it
    holder = SimpleNamespace(unet=unet, eager_unet=None)
    accelerate_for_inference(holder, "reduce-overhead", channels_last=cuda, backend="inductor" if cuda else "eager",
                             guard_filter=counting)
    compiled = holder.unet
    x, t, context, camera = inputs

    def call():
        with torch.no_grad():
            return compiled(x, t, context=context, camera=camera, num_frames=4)

    start = time.perf_counter()
    call()
    first_s = time.perf_counter() - start
    for _ in range(2):  # CUDA graphs: recorded on the second call, replayed after
        call()
    host_ms = []
    for _ in range(calls):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        call()
        host_ms.append((time.perf_counter() - start) * 1e3)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as trace:
        for _ in range(profiled):
            call()
    lookups = [event for event in trace.events() if event.name == "TorchDynamo Cache Lookup"]
    lookup_ms = sum(event.cpu_time_total for event in lookups) / 1e3 / max(len(lookups), 1)
    return {"guards_built": counted["built"], "guards_kept": counted["kept"],
            "cache_lookup_ms_per_call": round(lookup_ms, 4), "lookups_profiled": len(lookups),
            "host_ms_per_call_p50": round(statistics.median(host_ms), 3), "calls": calls,
            "first_call_s": round(first_s, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="the tiny UNet (smoke run)")
    parser.add_argument("--calls", type=int, default=None, help="timed calls per variant (CUDA 200, CPU 5)")
    parser.add_argument("--profiled", type=int, default=None, help="profiled calls per variant (CUDA 50, CPU 3)")
    parser.add_argument("--out", default=None, help="results JSON (default bench/results/unet_guards_GPU_DATE.json)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("unet guards bench: --device cuda but no CUDA device here", file=sys.stderr)
        return 2
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    calls = args.calls or (200 if cuda else 5)
    profiled = args.profiled or (50 if cuda else 3)
    unet = build_unet(args.tiny, device, dtype)
    inputs = unet_inputs(unet, device, dtype, latent=8 if args.tiny else 32)
    summary = {"gpu": gpu_label(device), "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
               "date": datetime.date.today().isoformat(), "commit": source_commit(), "torch": torch.__version__,
               "unet": "tiny" if args.tiny else "published", "dtype": str(dtype).removeprefix("torch."),
               "compile": "inductor, CUDA graphs" if cuda else "Dynamo (eager backend)", "rows": 8,
               "parameters": len(list(unet.parameters())), "variants": {}}
    for name, guard_filter in VARIANTS.items():
        summary["variants"][name] = measure(unet, inputs, device, guard_filter, calls, profiled)
        print(f"{name:>24s}: {json.dumps(summary['variants'][name])}", flush=True)
    out = Path(args.out) if args.out else RESULTS / f"unet_guards_{summary['gpu']}_{summary['date']}.json"
    write_results(out, summary)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
