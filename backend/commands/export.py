"""``iso3d export JOB_DIR --faces 20000 --texture 1024 --lods 50000,10000,2000 --format glb``: finish a generation.

Re-runs the finishing stages (surface, clean-up, decimation, UV unwrap, baked albedo texture, export) from the
field saved in a job folder (``iso3d generate``'s ``<out>.job``, finished or interrupted) in seconds, without
redoing SDS. Output files are named after the job folder (``chair.job`` -> ``chair.glb``, ``chair_lod1.glb``, ...)
and import into Blender upright (+Z up), centred on the origin, with the largest side ``--size`` metres.
Everything is written atomically: bad input or a failure leaves existing files untouched.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from backend.errors import UserError
from blender_addon.face_budgets import parse_face_budgets

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def _budgets(text: str) -> tuple[int, ...]:
    try:
        return tuple(parse_face_budgets(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _formats(text: str) -> tuple[str, ...]:
    from backend.finishing.asset_export import ASSET_FORMATS

    formats = tuple(ASSET_FORMATS) if text == "all" else tuple(part.strip().lower() for part in text.split(","))
    unknown = [f for f in formats if f not in ASSET_FORMATS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown format {unknown[0]!r}: choose from {', '.join(ASSET_FORMATS)}, all")
    return formats


def add_finishing_arguments(parser, default_faces: int | None = 20000, default_formats=("glb",)) -> None:
    """The finishing options of ``iso3d export`` (and of ``iso3d generate``, where ``--faces`` turns finishing on)."""
    parser.add_argument("--faces", type=int, default=default_faces,
                        help="face budget of the asset" + (" (default %(default)s)" if default_faces else
                                                           ": finish the result (UVs, baked texture, LODs)"))
    parser.add_argument("--texture", type=int, default=1024,
                        help="albedo texture size in texels, a power of two up to 8192 (default %(default)s)")
    parser.add_argument("--lods", type=_budgets, default=(), metavar="N,N,...",
                        help="further face budgets, one LOD asset each (e.g. 50000,10000,2000)")
    parser.add_argument("--format", dest="formats", type=_formats, default=default_formats, metavar="FMT[,FMT]",
                        help="glb, obj (+mtl+png), ply (vertex colours), comma-separated, or all (default "
                        + (",".join(default_formats) if default_formats else "OUT's format") + ")")
    parser.add_argument("--size", type=float, default=1.0,
                        help="largest side of the asset in metres / Blender units (default %(default)s)")
    parser.add_argument("--resolution", type=int, help="marching-cubes grid cells a side (default: the job's)")
    parser.add_argument("--threshold", type=float, help="surface density, 1/world-unit (default: the job's)")
    parser.add_argument("--min-component", type=float, default=0.01, metavar="FRACTION",
                        help="drop floating parts under this fraction of the faces (default %(default)s)")
    parser.add_argument("--max-hole", type=float, default=0.1, metavar="PERIMETER",
                        help="close holes up to this perimeter, field units (default %(default)s)")


def finish_options(args, formats: tuple[str, ...] | None = None):
    """FinishOptions from the parsed finishing options (``formats`` when ``--format`` was not given)."""
    from backend.finishing.pipeline import FinishOptions

    return FinishOptions(faces=args.faces, texture=args.texture, lods=tuple(args.lods),
                         formats=tuple(args.formats or formats or ()),
                         size=args.size, resolution=args.resolution, threshold=args.threshold,
                         min_component_fraction=args.min_component, max_hole_perimeter=args.max_hole)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export", help="finish a job's field: face budget, UVs + baked texture, LODs, GLB/OBJ/PLY",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job_dir", metavar="JOB_DIR", help="work folder of a generation (holds checkpoint.pt)")
    parser.add_argument("--out", help="output folder (default: JOB_DIR/finished)")
    parser.add_argument("--name", help="base name of the files (default: JOB_DIR's name without .job)")
    parser.add_argument("--device", default="cpu", help="torch device for the field queries (cpu, cuda)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_finishing_arguments(parser)
    return parser


def run(args) -> int:
    from backend.finishing.pipeline import finish_job, validate_options

    start = time.perf_counter()
    out = Path(args.out) if args.out else Path(args.job_dir) / "finished"
    bar = None
    try:
        options = finish_options(args)
        validate_options(options)
        if not args.quiet:
            from tqdm import tqdm

            from backend.finishing.pipeline import stage_count

            # leave=False: erased when done, so an error stays one line; disable=None: no bar when not a terminal
            bar = tqdm(total=stage_count(options), unit="stage", dynamic_ncols=True, leave=False, disable=None)

        def progress(stage: str, done: int, total: int) -> None:
            if bar is not None:
                bar.set_description(stage)
                bar.update(done - bar.n)

        result = finish_job(args.job_dir, out, options, device=args.device, name=args.name, progress=progress)
    except UserError as error:
        if bar is not None:
            bar.close()
        print(f"iso3d export: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if bar is not None:
        bar.close()
    for level in result.levels:
        print(f"{level.name}: {level.faces} faces, {level.vertices} vertices -> "
              + ", ".join(str(out / f) for f in level.files))
    print(f"finished in {time.perf_counter() - start:.1f} s (surface {result.surface_faces} faces)")
    return EXIT_OK
