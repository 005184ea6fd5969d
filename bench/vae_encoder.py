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
from bench.floor import median_ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--views", type=lambda text: [int(v) for v in text.split(",")], default=[4, 8])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from backend.commands.model_options import load_model_from_args
    from backend.diffusion.precision import guidance_autocast_dtype
    from backend.models.acceleration import compile_vae_encoder
    from backend.models.vae import encode_latents

    device = torch.device(args.device)
    namespace = argparse.Namespace(checkpoint=None, model="tiny" if args.tiny else "random", device=str(device),
                                   dtype="auto", offline=True, compile="off")
    model = load_model_from_args(namespace)
    compile_vae_encoder(model, "default" if device.type == "cuda" else None)
    compiled = getattr(model, "vae_encoder_moments", None)
    size = GenerateConfig().guidance.latent_resolution_input
    dtype = next(model.vae.parameters()).dtype
    autocast = device.type == "cuda"
    compute_dtype = guidance_autocast_dtype(dtype)

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
                    source = images.clone().requires_grad_(True)
                    with torch.autocast(device.type, compute_dtype, enabled=autocast):
                        latents = encode_latents(model.vae, source, moments=moments)
                    latents.float().square().sum().backward()

                milliseconds = median_ms(step, device, args.warmup, args.repeats)
                row = {"views": views, "encoder": name, "cudnn_benchmark": benchmark,
                       "fwd_bwd_ms": round(milliseconds, 3)}
                results["rows"].append(row)
                print(f"[vae encoder] {row}", flush=True)
    torch.backends.cudnn.benchmark = False
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
