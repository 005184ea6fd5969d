"""`iso3d-train`: fine-tune the multi-view model on rendered objects, or precompute their latent/CLIP cache.

    iso3d-train stage1 --data DIR --init sd-v2.1-base-4view.pt --out DIR [...]
    iso3d-train stage2 --data DIR --init OUT1/checkpoints/step-N/model.safetensors --out DIR [...]
    iso3d-train cache  --data DIR --init CKPT --cache DIR
    iso3d-train init-tiny OUT.safetensors   a tiny MVDream-layout checkpoint for `--model tiny` stage 1 (tests, CPU)
    torchrun --nproc-per-node 8 -m training.train_cli stage1 ...   (same command, many GPUs)

Exit status: 0 done, 2 bad input (one line on stderr, before any training starts).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend.models.configs import DEFAULT_CAMERA_ENCODING

# Stage defaults from the paper: stage 1 50k steps with a 10k-step warm-up then constant LR; stage 2 5k steps
# with a linear schedule.
STAGE_DEFAULTS = {
    1: {"steps": 50_000, "warmup_steps": 10_000, "lr_schedule": "constant"},
    2: {"steps": 5_000, "warmup_steps": 0, "lr_schedule": "linear"},
}


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="the renderer's output folder (iso3d-render --out)")
    parser.add_argument("--init", type=Path, help="checkpoint to start from (see the stage's description)")
    parser.add_argument("--model", choices=["published", "tiny"], default="published",
                        help="'tiny': the tiny test configs (CPU tests)")
    parser.add_argument("--image-encoder", metavar="PATH",
                        help="stage 1 from MVDream: take the image tower from this Isotropic3D-layout checkpoint "
                        "instead of open_clip's ViT-H-14 laion2b_s32b_b79k")
    parser.add_argument("--cache", type=Path, help="folder of precomputed latents/CLIP embeddings (iso3d-train cache)")
    parser.add_argument("--skip-incomplete", action="store_true", help="skip unfinished or broken object folders")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (under torchrun: cuda:LOCAL_RANK)")


def _add_training(parser: argparse.ArgumentParser, stage: int) -> None:
    defaults = STAGE_DEFAULTS[stage]
    parser.add_argument("--out", required=True, type=Path, help="run folder: checkpoints, metrics.jsonl, TensorBoard")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--steps", type=int, default=defaults["steps"], help="total optimizer steps")
    parser.add_argument("--batch-size", type=int, default=1, help="objects per process and micro-step")
    parser.add_argument("--grad-accumulation", type=int, default=1, help="micro-steps per optimizer step")
    parser.add_argument("--lr", type=float, default=1e-5, help="peak learning rate (AdamW)")
    parser.add_argument("--lr-schedule", choices=["constant", "linear"], default=defaults["lr_schedule"],
                        help="after the warm-up: constant, or linear decay to 0")
    parser.add_argument("--warmup-steps", type=int, default=defaults["warmup_steps"])
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (0: off)")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                        help="bf16: autocast to bfloat16 (weights and optimizer stay float32)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations (less memory)")
    parser.add_argument("--ema-decay", type=float, help="also keep an exponential moving average of the weights")
    parser.add_argument("--checkpoint-every", type=int, default=1000, help="optimizer steps between checkpoints")
    parser.add_argument("--keep-checkpoints", type=int, default=0, help="keep only the newest N (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--multiview-probability", type=float, default=0.7,
                        help="share of steps in the 4-view branch (the rest: single view)")
    parser.add_argument("--condition-drop", type=float, default=0.1,
                        help="share of samples trained without conditioning (classifier-free guidance)")
    parser.add_argument("--camera-encoding", choices=[DEFAULT_CAMERA_ENCODING, "mvdream"], default=DEFAULT_CAMERA_ENCODING,
                        help="camera code the model learns (isotropic3d: the one the inference path uses)")
    parser.add_argument("--num-workers", type=int, default=2, help="data-loading processes per GPU")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--overfit-one-batch", action="store_true",
                        help="debugging: train on the first step's batch again and again (the loss must fall)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iso3d-train", description="Fine-tune the Isotropic3D multi-view model")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    descriptions = {
        1: "stage 1: CLIP image conditioning, from MVDream's sd-v2.1-base-4view.pt (--init)",
        2: "stage 2: Explicit Multi-view Attention (reference latent as an extra frame), from a stage-1 checkpoint",
    }
    for stage, description in descriptions.items():
        sub = commands.add_parser(f"stage{stage}", help=description, description=description)
        _add_common(sub)
        _add_training(sub, stage)
        sub.set_defaults(stage=stage)
    cache = commands.add_parser("cache", help="precompute VAE latents and CLIP embeddings of a dataset")
    _add_common(cache)
    cache.add_argument("--batch-size", type=int, default=16, help="views per encoder call")
    cache.set_defaults(stage=None)
    tiny = commands.add_parser(
        "init-tiny", help="write a tiny MVDream-layout checkpoint (no image tower) for --model tiny stage 1",
        description="Write a seeded tiny MVDream-layout checkpoint (no image tower): the --init of "
        "`iso3d-train stage1 --model tiny`, for trying the training pipeline on a CPU.")
    tiny.add_argument("out", type=Path, metavar="OUT", help="checkpoint file to write (.safetensors)")
    tiny.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    tiny.set_defaults(stage=None)
    return parser


def run_training(args) -> int:
    from backend.errors import check_writable
    from training.finetune import FinetuneConfig, train

    check_writable(args.out, "--out", folder=True)  # the run folder: before the model loads, not at the first save
    config = FinetuneConfig(
        stage=args.stage,
        data=args.data,
        out=args.out,
        init=args.init,
        tiny=args.model == "tiny",
        image_encoder=args.image_encoder,
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accumulation=args.grad_accumulation,
        learning_rate=args.lr,
        lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing,
        ema_decay=args.ema_decay,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        seed=args.seed,
        multiview_probability=args.multiview_probability,
        condition_drop_probability=args.condition_drop,
        camera_encoding=args.camera_encoding,
        cache=args.cache,
        skip_incomplete=args.skip_incomplete,
        num_workers=args.num_workers,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
        overfit_one_batch=args.overfit_one_batch,
    )
    summary = train(config)
    print(f"iso3d-train: finished at step {summary['step']}, loss {summary['loss']}, checkpoint {summary['checkpoint']}")
    return 0


def run_cache(args) -> int:
    from training.cache_command import precompute_cache

    if args.init is None:
        raise_user("--init CKPT is needed: the cache holds that model's VAE latents and CLIP embeddings")
    from backend.errors import check_writable

    check_writable(args.cache, "--cache", folder=True)
    count = precompute_cache(args.data, args.init, args.cache, tiny=args.model == "tiny", image_encoder=args.image_encoder,
                             skip_incomplete=args.skip_incomplete, device=args.device, batch_size=args.batch_size)
    print(f"iso3d-train: cached {count} object(s) in {args.cache}")
    return 0


def run_init_tiny(args) -> int:
    from backend.models.multiview_model import build_tiny_model, save_checkpoint

    if args.out.suffix != ".safetensors":
        raise_user(f"{args.out}: the checkpoint is written as safetensors; name it *.safetensors")
    if args.out.exists():
        raise_user(f"{args.out} exists; remove it or choose another file")
    if not args.out.parent.is_dir():
        raise_user(f"folder {args.out.parent} does not exist")
    from backend.errors import check_writable

    check_writable(args.out, "OUT")
    model = build_tiny_model(seed=args.seed)
    model.image_encoder = None  # MVDream's layout: stage 1 adds the (tiny, seeded) image tower
    path = save_checkpoint(model, args.out, layout="mvdream")
    print(f"iso3d-train: wrote {path}; start with: iso3d-train stage1 --model tiny --init {path} --data DIR --out DIR")
    return 0


def raise_user(message: str):
    from backend.errors import UserError

    raise UserError(message)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "cache" and args.cache is None:
        print("iso3d-train: error: cache needs --cache DIR", file=sys.stderr)
        return 2
    from backend.errors import run_command

    commands = {"cache": run_cache, "init-tiny": run_init_tiny}
    return run_command("iso3d-train", lambda: commands.get(args.command, run_training)(args))


if __name__ == "__main__":
    sys.exit(main())
