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

from backend.errors import UserError, check_writable
from backend.settings import add_setting_arguments, overrides_from_args, settings_from_dict

EXIT_OK, EXIT_BAD_INPUT = 0, 2


FINISH_FLAG_ALIASES = {"formats": ("--format",), "min_component_fraction": ("--min-component",),
                       "max_hole_perimeter": ("--max-hole",)}
FINISH_DEST = "finish:"


def add_finishing_arguments(parser, title: str = "finishing (the finish options)") -> None:
    """The finishing options of ``iso3d export`` (and of ``iso3d generate``, where ``--faces`` turns finishing on),
    one flag per field of FinishOptions."""
    from backend.finishing.pipeline import FinishOptions

    add_setting_arguments(parser, FinishOptions(), title=title, aliases=FINISH_FLAG_ALIASES, dest_prefix=FINISH_DEST)


def finishing_requested(args) -> dict:
    """The finish options given on the command line (wire key -> text)."""
    return overrides_from_args(args, FINISH_DEST)


def finish_options(args, formats: tuple[str, ...] | None = None):
    """Validated FinishOptions from the parsed finishing options (``formats`` when ``--format`` was not given)."""
    from backend.finishing.pipeline import FinishOptions

    given = finishing_requested(args)
    if formats and "formats" not in given:
        given["formats"] = list(formats)
    if given.get("formats") == "all":
        from backend.finishing.asset_export import ASSET_FORMATS

        given["formats"] = list(ASSET_FORMATS)
    return settings_from_dict(FinishOptions(), given)


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
    from backend.finishing.pipeline import finish_job

    start = time.perf_counter()
    out = Path(args.out) if args.out else Path(args.job_dir) / "finished"
    bar = None
    try:
        options = finish_options(args)
        if Path(args.job_dir).is_dir():  # (finish_job says what is wrong with a job folder that is not one)
            check_writable(out, "--out" if args.out else "the output folder", folder=True)
        if not args.quiet:
            from tqdm import tqdm

            from backend.finishing.pipeline import stage_count

            # leave=False: erased when done, so an error stays one line; disable=None: no bar when not a terminal
            bar = tqdm(total=stage_count(options), unit="stage", dynamic_ncols=True, leave=False, disable=None)

        def progress(stage: str, done: int, total: int) -> None:
            if bar is not None:
                bar.total = total  # fewer stages once the surface is known (a level kept whole or left out)
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
    for note in result.notes:
        print(f"note: {note}")
    for level in result.levels:
        print(f"{level.name}: {level.faces} faces, {level.vertices} vertices -> "
              + ", ".join(str(out / f) for f in level.files))
    print(f"finished in {time.perf_counter() - start:.1f} s (surface {result.surface_faces} faces)")
    return EXIT_OK
