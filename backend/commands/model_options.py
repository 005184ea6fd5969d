"""Command-line options shared by every command that runs the diffusion model: which weights, device, dtype."""

from __future__ import annotations

import argparse

import torch

from backend.errors import UserError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def add_model_arguments(parser: argparse.ArgumentParser, default_dtype: str = "auto", default_compile: str = "off") -> None:
    """``default_compile``: "auto" (CUDA graphs on a GPU, off on the CPU) for long runs and services, where the
    minute of compiling pays off; "off" for one-shot commands."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="isotropic3d.ckpt (or a fine-tuned checkpoint in its layout); default: $ISO3D_CHECKPOINT, then the "
        "Hugging Face cache of pkunliu/Isotropic3D, then a download when online",
    )
    group.add_argument(
        "--model",
        choices=["isotropic3d", "tiny", "random"],
        default="isotropic3d",
        help="'tiny': the untrained test-size model (no weights needed; output is not meaningful); "
        "'random': the published sizes with random weights (benchmarks)",
    )
    group.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    group.add_argument(
        "--dtype",
        choices=["auto", *DTYPES],
        default=default_dtype,
        help="weights' dtype; auto: float16 on CUDA (the reference's fp16 precision; bfloat16 is 4%% faster per UNet "
        "call but its SDS x0 targets are 8x noisier: use it only where float16 overflows), float32 on CPU "
        f"(default {default_dtype})",
    )
    group.add_argument("--offline", action="store_true", help="never download weights")
    group.add_argument(
        "--compile",
        choices=["off", "default", "cudagraphs", "auto"],
        default=default_compile,
        help="torch.compile the UNet (and on CUDA the VAE encoder of generate's SDS steps; 'cudagraphs': the UNet "
        "also with CUDA graphs, the fastest on a GPU; 'auto': cudagraphs on a GPU, off on the CPU); the first run "
        f"compiles for about a minute (default {default_compile})",
    )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but this torch has no usable CUDA device")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The weights' dtype ``--dtype NAME`` asks for on ``device`` (auto: backend.diffusion.precision's default)."""
    from backend.diffusion.precision import default_weights_dtype

    return DTYPES[name] if name != "auto" else default_weights_dtype(device)


def load_model_from_args(args: argparse.Namespace):
    """The model the options ask for, on its device and dtype, in eval mode."""
    from backend.models.multiview_model import build_random_published_model, build_tiny_model, load_checkpoint
    from backend.models.weights import find_checkpoint

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if args.model in ("tiny", "random") and args.checkpoint:
        raise UserError(f"--model {args.model} takes no --checkpoint")
    if args.model == "tiny":
        model = build_tiny_model()
    elif args.model == "random":
        model = build_random_published_model(device=device)
    else:
        path = find_checkpoint(args.checkpoint, allow_download=not args.offline)
        model = load_checkpoint(path)
        if model.image_encoder is None:
            raise UserError(
                f"checkpoint {path.name} has no image encoder (the CLIP image tower that conditions on your image): "
                "it is an MVDream text-to-multi-view checkpoint; use isotropic3d.ckpt or a fine-tuned checkpoint "
                f"(iso3d-train stage1 --init {path.name} adds the tower, open_clip's or --image-encoder isotropic3d.ckpt)"
            )
    model = model.to(device=device, dtype=dtype).eval()
    compile_mode = args.compile
    if compile_mode == "auto":
        compile_mode = "cudagraphs" if device.type == "cuda" else "off"
    if compile_mode != "off":
        from backend.compile_cache import use_compile_cache
        from backend.models.acceleration import accelerate_for_run

        use_compile_cache()
        accelerate_for_run(model, compile_mode, device)
    return model
