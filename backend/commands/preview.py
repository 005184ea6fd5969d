"""`iso3d preview IMAGE --out grid.png`: four consistent views of the object in IMAGE, side by side in one PNG."""

from __future__ import annotations

import argparse
import sys
import time

from backend.commands.model_options import add_model_arguments, load_model_from_args


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "preview",
        help="multi-view DDIM preview of an image",
        description="Generate consistent views of the object in IMAGE (RGBA or on a plain background) and save "
        "them side by side as one PNG.",
    )
    parser.add_argument("image", help="input image (PNG, JPEG, WebP, ...); transparency is composited over white")
    parser.add_argument("--out", default="preview.png", help="output PNG (default: preview.png)")
    parser.add_argument("--views", type=int, default=4, help="number of views (default 4)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--guidance", type=float, default=10.0, help="classifier-free guidance scale (default 10)")
    parser.add_argument("--eta", type=float, default=1.0, help="DDIM eta, 0 = deterministic (default 1, as the reference)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--elevation", type=float, default=15.0, help="camera elevation in degrees (default 15)")
    parser.add_argument("--azimuth", type=float, default=0.0, help="azimuth of the first view in degrees (default 0)")
    parser.add_argument(
        "--camera-encoding",
        choices=["isotropic3d", "mvdream"],
        help="camera code the model is conditioned with (default: the checkpoint's own)",
    )
    parser.add_argument(
        "--reference-frame",
        action="store_true",
        help="Explicit Multi-view Attention: the input image's clean latent joins the views as an extra frame",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from backend.diffusion.preview import PreviewSettings, run_preview
    from backend.events import Progress, Views
    from backend.imaging import load_image, prepare_preview_image, save_views_grid

    settings = PreviewSettings(
        num_views=args.views,
        steps=args.steps,
        guidance_scale=args.guidance,
        eta=args.eta,
        seed=args.seed,
        elevation=args.elevation,
        azimuth_start=args.azimuth,
        camera_encoding=args.camera_encoding,
        reference_frame=args.reference_frame,
    )
    settings.validate()
    image = prepare_preview_image(load_image(args.image))
    started = time.perf_counter()
    model = load_model_from_args(args)
    loaded = time.perf_counter()
    views = None
    with tqdm(total=settings.steps, desc="denoise", unit="step", disable=args.quiet, file=sys.stderr) as bar:
        for event in run_preview(model, image, settings):
            if isinstance(event, Progress):
                bar.update(event.step - bar.n)
            elif isinstance(event, Views):
                views = event
    path = save_views_grid(views.images, args.out)
    azimuths = "/".join(f"{a:g}" for a in views.azimuths)
    print(
        f"wrote {path}: {len(views.images)} views of {views.images.shape[2]}x{views.images.shape[1]} "
        f"(elevation {settings.elevation:g} deg, azimuths {azimuths} deg) with {model.name} on "
        f"{model.device.type}, {time.perf_counter() - loaded:.1f} s (+{loaded - started:.1f} s loading)"
    )
    if not model.trained:
        print("note: this model's weights are untrained (random): the views are noise-like patterns, not your object")
    return 0
