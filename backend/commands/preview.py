"""`iso3d preview IMAGE --out grid.png`: four consistent views of the object in IMAGE, side by side in one PNG.

Several images (``iso3d preview photos/*.png --out 'previews/{name}.png'``) are previewed one after another with
the model loaded once; ``{name}`` is each image's file name without its extension (backend.commands.batch_outputs).
"""

from __future__ import annotations

import argparse
import sys
import time

from backend.commands.batch_outputs import output_paths, run_label
from backend.commands.model_options import add_model_arguments, load_model_from_args
from backend.errors import check_writable
from backend.settings import add_setting_arguments, overrides_from_args, settings_from_dict

DEFAULT_OUT, DEFAULT_BATCH_OUT = "preview.png", "previews/{name}.png"
PREVIEW_FLAG_ALIASES = {"num_views": ("--views",), "guidance_scale": ("--guidance",), "azimuth_start": ("--azimuth",)}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "preview",
        help="multi-view DDIM preview of an image",
        description="Generate consistent views of the object in IMAGE (RGBA or on a plain background) and save "
        "them side by side as one PNG.",
    )
    parser.add_argument("image", nargs="+", help="input image(s) (PNG, JPEG, WebP, ...); transparency is composited "
                        "over white; several are previewed one after another, the model loaded once")
    parser.add_argument("--out", default=None,
                        help=f"output PNG; {{name}} in it stands for the image's file name without its extension "
                        f"(default {DEFAULT_OUT}, with several images {DEFAULT_BATCH_OUT})")
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
    images = list(args.image)
    outs = output_paths(images, args.out, DEFAULT_OUT, DEFAULT_BATCH_OUT, (".png",))
    for image, out in zip(images, outs):  # every input and output checked before the model loads
        load_image(image)  # readable; prepared at its turn: one input held at a time
        check_writable(out, "--out")
    started = time.perf_counter()
    model = load_model_from_args(args)
    loaded = time.perf_counter()
    for number, (image, out) in enumerate(zip(images, outs), start=1):
        label = run_label(number, len(images), out)
        prepared = prepare_preview_image(load_image(image))
        began = time.perf_counter()
        views = None
        with tqdm(total=settings.steps, desc=f"{label}denoise", unit="step", disable=args.quiet,
                  file=sys.stderr) as bar:
            for event in run_preview(model, prepared, settings):
                if isinstance(event, Progress):
                    bar.update(event.step - bar.n)
                elif isinstance(event, Views):
                    views = event
        path = save_views_grid(views.images, out)
        azimuths = "/".join(f"{a:g}" for a in views.azimuths)
        took = f"{time.perf_counter() - began:.1f} s" + (f" (+{loaded - started:.1f} s loading)" if number == 1 else "")
        print(
            f"{label}wrote {path}: {len(views.images)} views of {views.images.shape[2]}x{views.images.shape[1]} "
            f"(elevation {settings.elevation:g} deg, azimuths {azimuths} deg) with {model.name} on "
            f"{model.device.type}, {took}"
        )
    if not model.trained:
        print("note: this model's weights are untrained (random): the views are noise-like patterns, not your object")
    return 0
