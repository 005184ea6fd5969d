"""Benchmark of fine-tuning steps at the published model sizes (random weights).

For stage 1 (CLIP conditioning) and stage 2 (Explicit Multi-view Attention: + the clean reference frame), and
for both branches (4 target views / 1 target view), times whole optimizer steps of the training code path
(training.objective inputs, bf16 autocast, epsilon loss on targets, backward, gradient clipping, fused AdamW) on
latents as the cache gives them, and prints samples/s (objects/s) and peak memory per GPU; the stage figure
blends the branches as training mixes them (70% 4-view steps). Then the same on 2 GPUs under DDP (processes
started with torch.multiprocessing) and the scaling efficiency = samples/s on 2 GPUs / (2 x samples/s on 1).

    python bench/train.py                                # CUDA, published sizes, 1 and 2 GPUs
    python bench/train.py --batch-size 24 --gradient-checkpointing
    python bench/train.py --tiny --device cpu            # a quick check that it runs (2 gloo processes)

Anchor (issue 7): the paper trained stage 1 at about 8 samples/s per A800.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

MULTIVIEW_SHARE = 0.7  # the paper's mix of 4-view and single-view steps


def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(rank: int, world_size: int, args: argparse.Namespace, out_path: str) -> None:
    """Times training steps in one process (one rank of ``world_size``) and writes its figures to ``out_path``."""
    import torch.distributed as dist

    from backend.models.configs import DEFAULT_CAMERA_ENCODING
    from backend.models.multiview_model import build_random_published_model, build_tiny_model
    from training.finetune import freeze_inert_cross_attention
    from training.objective import build_unet_inputs, epsilon_loss, reference_camera

    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    if world_size > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    model = build_tiny_model(seed=0) if args.tiny else build_random_published_model(seed=0)
    unet = model.unet.to(device).train().requires_grad_(True)
    freeze_inert_cross_attention(unet)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    network = unet
    if world_size > 1:
        network = torch.nn.parallel.DistributedDataParallel(
            unet, device_ids=[rank] if device.type == "cuda" else None, gradient_as_bucket_view=True
        )
    trainable = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=device.type == "cuda")
    alphas_cumprod = model.alphas_cumprod.to(device)
    size = unet.config.sample_size
    context_dim = unet.config.cross_attention_dim
    use_bf16 = args.precision == "bf16"
    results = {}
    for stage in (1, 2):
        for targets in (4, 1):
            batch = args.batch_size
            generator = torch.Generator().manual_seed(rank)
            shape = (batch, targets, 4, size, size)

            def step():
                inputs = build_unet_inputs(
                    clean_latents=torch.randn(shape, generator=generator).to(device),
                    noise=torch.randn(shape, generator=generator).to(device),
                    timesteps=torch.randint(0, 1000, (batch,), generator=generator).to(device),
                    context=torch.randn(batch, 1, context_dim, generator=generator).to(device),
                    cameras=torch.randn(batch, targets, 16, generator=generator).to(device),
                    alphas_cumprod=alphas_cumprod,
                    reference_latents=torch.randn(batch, 4, size, size, generator=generator).to(device)
                    if stage == 2 else None,
                    reference_camera_code=reference_camera(DEFAULT_CAMERA_ENCODING).to(device) if stage == 2 else None,
                )
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    prediction = network(inputs.x, inputs.timesteps, context=inputs.context, camera=inputs.camera,
                                         num_frames=inputs.num_frames)
                loss = epsilon_loss(prediction, inputs)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            name = f"stage{stage}_{targets}view"
            try:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                for _ in range(args.warmup):
                    step()
                _synchronize(device)
                if world_size > 1:
                    dist.barrier()
                started = time.perf_counter()
                for _ in range(args.steps):
                    step()
                _synchronize(device)
                seconds = (time.perf_counter() - started) / args.steps
                entry = {"seconds_per_step": seconds, "samples_per_s_per_gpu": batch / seconds}
                if device.type == "cuda":
                    entry["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            except torch.cuda.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                entry = {"error": "out of memory"}
            results[name] = entry
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump(results, handle)
    if world_size > 1:
        dist.destroy_process_group()


def _worker(rank: int, world_size: int, args, out_dir: str) -> None:
    measure(rank, world_size, args, os.path.join(out_dir, f"rank{rank}.json"))


def run(world_size: int, args) -> list[dict]:
    """Figures of every rank of a ``world_size``-process run."""
    with tempfile.TemporaryDirectory() as out_dir:
        if world_size == 1:
            measure(0, 1, args, os.path.join(out_dir, "rank0.json"))
        else:
            import torch.multiprocessing as mp

            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ["MASTER_PORT"] = str(_free_port())
            mp.spawn(_worker, args=(world_size, args, out_dir), nprocs=world_size, join=True)
        return [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(world_size)]


def blended(figures: dict, stage: int) -> float | None:
    """Samples/s of a stage's training mix: time-weighted over 70% 4-view and 30% single-view steps."""
    multi, single = figures.get(f"stage{stage}_4view", {}), figures.get(f"stage{stage}_1view", {})
    if "seconds_per_step" not in multi or "seconds_per_step" not in single:
        return None
    seconds = MULTIVIEW_SHARE * multi["seconds_per_step"] + (1 - MULTIVIEW_SHARE) * single["seconds_per_step"]
    return multi["samples_per_s_per_gpu"] * multi["seconds_per_step"] / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny model (for a quick CPU check)")
    parser.add_argument("--batch-size", type=int, default=8, help="objects per GPU and step")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--gpus", type=int, default=2, help="also measure on this many GPUs (1: skip scaling)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here: use --device cpu (with --tiny for a quick check)")
    args.device = args.device.split(":")[0]

    report = {
        "model": "tiny" if args.tiny else "published sizes, random weights",
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "batch_size_per_gpu": args.batch_size,
        "precision": args.precision,
        "gradient_checkpointing": args.gradient_checkpointing,
    }
    one = run(1, args)[0]
    report["1_gpu"] = one
    print(f"{report['model']} on {report['device']}, batch {args.batch_size}/GPU, {args.precision}"
          f"{', gradient checkpointing' if args.gradient_checkpointing else ''}")
    for name, entry in one.items():
        memory = f", peak {entry['peak_memory_gb']:.1f} GiB" if "peak_memory_gb" in entry else ""
        figure = entry.get("error") or f"{entry['samples_per_s_per_gpu']:.2f} samples/s{memory}"
        print(f"  1 GPU  {name:14s} {figure}")
    for stage in (1, 2):
        mix = blended(one, stage)
        if mix is not None:
            print(f"  1 GPU  stage {stage} mix (70% 4-view): {mix:.2f} samples/s")
    available = torch.cuda.device_count() if args.device == "cuda" else args.gpus
    if args.gpus > 1 and available >= args.gpus:
        ranks = run(args.gpus, args)
        report[f"{args.gpus}_gpus"] = ranks
        for name, entry in one.items():
            if "samples_per_s_per_gpu" not in entry or any("samples_per_s_per_gpu" not in r[name] for r in ranks):
                continue
            total = sum(r[name]["samples_per_s_per_gpu"] for r in ranks)
            efficiency = total / (args.gpus * entry["samples_per_s_per_gpu"])
            memory = max(r[name].get("peak_memory_gb", 0.0) for r in ranks)
            report.setdefault("scaling_efficiency", {})[name] = efficiency
            print(f"  {args.gpus} GPUs {name:14s} {total:.2f} samples/s in all, efficiency {efficiency:.0%}"
                  + (f", peak {memory:.1f} GiB/GPU" if memory else ""))
    elif args.gpus > 1:
        print(f"  ({args.gpus}-GPU scaling skipped: {available} device(s) here)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
