"""`iso3d preview IMAGE --out grid.png`: four consistent views of the object in IMAGE, side by side in one PNG."""

from __future__ import annotations

import argparse
import sys
import time

from backend.commands.model_options import add_model_arguments, load_model_from_args
from backend.errors import check_writable
from backend.settings import add_setting_arguments, overrides_from_args, settings_from_dict

PREVIEW_FLAG_ALIASES = {"num_views": ("--views",), "guidance_scale": ("--guidance",), "azimuth_start": ("--azimuth",)}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "preview",
        help="multi-view DDIM preview of an image",
        description="Generate consistent views of the object in IMAGE (RGBA or on a plain background) and save "
        "them side by side as one PNG.",
    )
    parser.add_argument("image", help="input image (PNG, JPEG, WebP, ...); transparency is composited over white")
    parser.add_argument("--out", default="preview.png", help="output PNG (default: preview.png)")
    from backend.diffusion.preview import PreviewSettings

    add_setting_arguments(parser, PreviewSettings(), title="settings (a preview job's settings)",
                          aliases=PREVIEW_FLAG_ALIASES)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from backend.diffusion.preview import PreviewSettings, run_preview
    from backend.events import Progress, Views
    from backend.imaging import load_image, prepare_preview_image, save_views_grid

    settings = settings_from_dict(PreviewSettings(), overrides_from_args(args))
    image = prepare_preview_image(load_image(args.image))
    check_writable(args.out, "--out")
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
