"""``iso3d-render``: renders training views of many objects headless, in worker processes driving bpy.

    iso3d-render OBJECTS... --out DIR [--workers N] [--shard-index I --num-shards N | --ray [ADDRESS]] [options]
    iso3d-render merge DIR      one manifest (manifest-merged.json) from the shards' manifests, with totals
    iso3d-render status DIR     done / failed / flagged / remaining, throughput and ETA

OBJECTS are object files, folders, list files or Objaverse UIDs (see ``training.render_inputs``; an object's id
is its content). Each object becomes ``DIR/<object id>/`` with ``fixed_NNN.png``, ``random_NNN.png`` and
``cameras.json`` (conventions inside the file and in ``blender_addon.core.render_plan``). A manifest lists done
objects with their quality flags and failed objects with the reason; running the same command again resumes:
every finished folder is checked whole (broken ones are rendered again), failed ones are retried (unless
--skip-failed).

Exit status: 0 all objects rendered, 1 some objects failed (listed in the manifest), 2 bad input or set-up
error (one line on stderr), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM; workers stopped, manifest saved).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from backend.errors import UserError, check_writable
from blender_addon.core.render_plan import NORMALIZATIONS, UP_AXES, RenderSettings, RenderSettingsError, is_flagged
from blender_addon.core.atomic_files import write_json_atomically
from blender_addon.core.render_staging import live_staging_folders, remove_abandoned

from .objaverse_source import ObjaverseUnavailable, known_uids
from .render_inputs import InputError, collect_sources, identify, settings_key, shard
from .render_manifest import (
    MERGED_MANIFEST,
    Manifest,
    ManifestError,
    check_done_folder,
    manifest_path,
    merge,
    object_flags,
    remove_broken_folder,
    summary,
)
from .render_workers import RenderPool, WorkerStartError

# Settings that do not change an object's pixels: they take no part in object ids or the resume check.
_NOT_IMAGE_SETTINGS = ("threads", "max_faces")


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    defaults = RenderSettings()
    parser = _OneLineParser(
        prog="iso3d-render",
        description="Render multi-view training data (fixed + random view sets, HDRI lighting) with Blender.",
    )
    parser.add_argument("objects", nargs="*", metavar="OBJECTS",
                        help="object files (.glb .gltf .obj .fbx .ply .stl .blend), folders, list files or Objaverse UIDs")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--workers", type=int, default=1, help="render processes, one bpy scene each (default 1)")
    parser.add_argument("--shard-index", type=int, default=0, metavar="I", help="this machine's shard (0-based)")
    parser.add_argument("--num-shards", type=int, default=1, metavar="N", help="number of shards over all machines")
    parser.add_argument("--time-limit", type=float, default=900.0, metavar="SECONDS",
                        help="per-object time limit; an object still rendering then fails (default 900)")
    parser.add_argument("--skip-failed", action="store_true", help="on resume, skip objects that failed before")
    parser.add_argument("--max-file-mb", type=float, default=1024.0,
                        help="object files larger than this fail without being imported (default 1024)")
    parser.add_argument("--objaverse-cache", metavar="DIR", help="cache folder for Objaverse (default ~/.objaverse)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = parser.add_argument_group("render settings")
    group.add_argument("--resolution", type=int, default=defaults.resolution, help="image size in pixels (square)")
    group.add_argument("--fixed-views", type=int, default=defaults.fixed_views)
    group.add_argument("--fixed-elevation", type=float, default=defaults.fixed_elevation_deg, help="degrees")
    group.add_argument("--random-views", type=int, default=defaults.random_views)
    group.add_argument("--random-elevation-range", type=float, nargs=2, metavar=("MIN", "MAX"),
                       default=(defaults.random_elevation_min_deg, defaults.random_elevation_max_deg), help="degrees")
    group.add_argument("--azimuth-start", type=float, default=defaults.azimuth_start_deg, help="degrees")
    group.add_argument("--distance", type=float, default=defaults.distance, help="camera distance (object fits a unit cube)")
    group.add_argument("--fov", type=float, default=defaults.fov_deg, help="field of view in degrees")
    group.add_argument("--background", choices=("white", "transparent"), default=defaults.background)
    group.add_argument("--engine", choices=("cycles", "eevee"), default=defaults.engine)
    group.add_argument("--device", choices=("cpu", "gpu"), default=defaults.device)
    group.add_argument("--samples", type=int, default=defaults.samples)
    group.add_argument("--no-denoise", action="store_true", help="turn Cycles' denoiser off")
    group.add_argument("--seed", type=int, default=defaults.seed, help="base seed (same seed = same images)")
    group.add_argument("--hdri", action="append", default=[], metavar="NAME",
                       help="HDRI file name from Blender's studiolights/world (repeatable; default all)")
    group.add_argument("--hdri-strength-range", type=float, nargs=2, metavar=("MIN", "MAX"),
                       default=(defaults.hdri_strength_min, defaults.hdri_strength_max))
    group.add_argument("--threads-per-worker", type=int, default=0,
                       help="render threads per worker (default: CPU cores / workers)")
    group.add_argument("--max-faces", type=int, default=defaults.max_faces,
                       help="objects with more triangles fail (an n-gon counts n - 2)")
    group.add_argument("--normalize", choices=NORMALIZATIONS, default=defaults.normalize,
                       help="box: largest side 1 (the paper's data; box-like objects lose corners at the default "
                       "distance); sphere: bounding sphere of radius 0.5 (no view crops)")
    group.add_argument("--up-axis", choices=UP_AXES, default=defaults.up_axis,
                       help="up axis of the source files: format (glTF/OBJ/FBX Y, PLY/STL Z; default) or y or z; "
                       "objects flagged likely_z_up render upright with --up-axis z")
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="render on a Ray cluster, one task per object, balanced dynamically (ADDRESS: the "
                        "cluster's, e.g. ray://head:10001 or auto; without it a local Ray instance); --workers is "
                        "then the number of concurrent tasks")
    parser.add_argument("--retries", type=int, default=2,
                        help="with --ray: attempts after a worker crash or time-out before an object fails (default 2)")
    return parser


def settings_from_args(args) -> RenderSettings:
    threads = args.threads_per_worker or max(1, (os.cpu_count() or 1) // max(1, args.workers))
    return RenderSettings(
        resolution=args.resolution,
        fixed_views=args.fixed_views,
        fixed_elevation_deg=args.fixed_elevation,
        random_views=args.random_views,
        random_elevation_min_deg=args.random_elevation_range[0],
        random_elevation_max_deg=args.random_elevation_range[1],
        azimuth_start_deg=args.azimuth_start,
        distance=args.distance,
        fov_deg=args.fov,
        background=args.background,
        engine=args.engine,
        device=args.device,
        samples=args.samples,
        denoise=not args.no_denoise,
        seed=args.seed,
        hdris=tuple(args.hdri),
        hdri_strength_min=args.hdri_strength_range[0],
        hdri_strength_max=args.hdri_strength_range[1],
        threads=threads,
        max_faces=args.max_faces,
        normalize=args.normalize,
        up_axis=args.up_axis,
    )


def _fail(message: str) -> int:
    print(f"iso3d-render: error: {message}", file=sys.stderr)
    return 2


def run(args) -> int:
    if args.workers < 1:
        return _fail(f"--workers must be at least 1 (got {args.workers})")
    if not args.time_limit > 0:
        return _fail(f"--time-limit must be positive (got {args.time_limit})")
    if args.retries < 0:
        return _fail(f"--retries must be 0 or more (got {args.retries})")
    settings = settings_from_args(args)
    image_settings = {k: v for k, v in settings.to_dict().items() if k not in _NOT_IMAGE_SETTINGS}
    sources = shard(collect_sources(args.objects), args.shard_index, args.num_shards)
    out_dir = os.path.abspath(args.out)
    check_writable(out_dir, "--out", folder=True)  # a folder it cannot write: one line now, not a traceback later
    os.makedirs(out_dir, exist_ok=True)
    manifest = Manifest.open(manifest_path(out_dir, args.shard_index, args.num_shards), image_settings)
    shard_name = f"shard-{args.shard_index:05d}-of-{args.num_shards:05d}"
    os.makedirs(os.path.join(out_dir, ".cache"), exist_ok=True)
    items = identify(sources, settings_key(image_settings),
                     digest_cache=os.path.join(out_dir, ".cache", f"file-digests-{shard_name}.json"))
    staging_dir = os.path.join(out_dir, ".partial", shard_name)
    _, still_owned = remove_abandoned(staging_dir)  # leftovers of a killed run; never a live worker's folder
    if still_owned:
        print(f"iso3d-render: warning: {still_owned} object(s) in {staging_dir} are still being rendered by "
              "another live process (is this shard running twice?)", file=sys.stderr)
    os.makedirs(staging_dir, exist_ok=True)
    log_dir = os.path.join(out_dir, ".logs", shard_name)
    os.makedirs(log_dir, exist_ok=True)

    pending, already_done, skipped_failed, broken = [], 0, 0, 0
    for item in items:
        problem = check_done_folder(out_dir, item.object_id, settings)
        if problem is None:
            if item.object_id not in manifest.done:
                manifest.mark_done(item.object_id, item.source, None, object_flags(out_dir, item.object_id))
            already_done += 1
            continue
        if problem != "absent":
            print(f"iso3d-render: {item.object_id} is incomplete ({problem}): rendering it again", file=sys.stderr)
            remove_broken_folder(out_dir, item.object_id, staging_dir)
            broken += 1
        manifest.forget(item.object_id)
        if args.skip_failed and item.object_id in manifest.failed:
            skipped_failed += 1
        else:
            pending.append(item)
    manifest.objects_total = len(items)
    failed_now = 0
    for item in list(pending):
        reason = None
        if not item.is_objaverse_uid:
            size_mb = os.path.getsize(item.source) / 2**20
            if size_mb > args.max_file_mb:
                reason = f"too large: the file has {size_mb:.1f} MB, more than --max-file-mb {args.max_file_mb:g}"
        if reason:
            manifest.mark_failed(item.object_id, item.source, reason)
            pending.remove(item)
            failed_now += 1
    uids = [item for item in pending if item.is_objaverse_uid]
    if uids:
        known = known_uids(args.objaverse_cache)
        for item in uids:
            if item.source not in known:
                manifest.mark_failed(item.object_id, item.source, "unknown Objaverse UID")
                pending.remove(item)
                failed_now += 1
    manifest.save()

    engine = f"Ray ({args.ray}), {args.workers} concurrent task(s)" if args.ray else \
        f"{min(args.workers, max(1, len(pending)))} worker(s)"
    print(
        f"iso3d-render: {len(items)} objects in this shard ({args.shard_index}/{args.num_shards}): "
        f"{already_done} already done ({broken} broken folder(s) removed), {skipped_failed} skipped as failed "
        f"before, {len(pending)} to render with {engine} -> {out_dir}",
        file=sys.stderr,
    )
    started = time.monotonic()
    rendered = flagged = 0
    if pending:
        from tqdm import tqdm

        if args.ray:
            from .render_ray import RayRenderer

            pool = RayRenderer(args.ray, args.workers, settings.to_dict(), out_dir, staging_dir, log_dir,
                               args.time_limit, args.retries, args.objaverse_cache)
        else:
            pool = RenderPool(args.workers, settings.to_dict(), out_dir, staging_dir, log_dir, args.time_limit,
                              args.objaverse_cache)
        with tqdm(total=len(pending), unit="obj", file=sys.stderr, disable=args.no_progress, dynamic_ncols=True,
                  smoothing=0.1) as bar:
            results = pool.run(pending)
            try:
                for result in results:
                    if result.reason is None:
                        flags = object_flags(out_dir, result.item.object_id)
                        manifest.mark_done(result.item.object_id, result.item.source, round(result.seconds, 3), flags)
                        rendered += 1
                        flagged += is_flagged(flags)
                    else:
                        manifest.mark_failed(result.item.object_id, result.item.source, result.reason)
                        failed_now += 1
                        bar.write(f"failed {result.item.object_id}: {result.reason}", file=sys.stderr)
                    manifest.save()
                    bar.set_postfix(failed=failed_now, flagged=flagged, refresh=False)
                    bar.update(1)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM (Terminated): the manifest says what is on disk
                results.close()  # the workers are killed and joined: no folder is published after this
                record_published(manifest, pending, out_dir, settings)
                manifest.save()
                raise
            finally:
                results.close()
    elapsed = time.monotonic() - started
    rate = f", {rendered / elapsed:.3f} objects/s" if rendered and elapsed > 0 else ""
    print(
        f"iso3d-render: rendered {rendered} ({flagged} flagged), failed {failed_now}, total done "
        f"{len(manifest.done)} in {elapsed:.1f} s{rate}; manifest {manifest.path}",
        file=sys.stderr,
    )
    return 1 if failed_now else 0


def _format_duration(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def merge_main(argv: list[str]) -> int:
    parser = _OneLineParser(prog="iso3d-render merge",
                            description="Join the shards' manifests of an output folder into one, with totals.")
    parser.add_argument("out", metavar="DIR", help="the output folder the shards rendered into")
    parser.add_argument("--output", metavar="FILE", help=f"merged manifest (default DIR/{MERGED_MANIFEST})")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.out):
        return _fail(f"{args.out} is not a folder")
    merged = merge(args.out)
    target = args.output or os.path.join(args.out, MERGED_MANIFEST)
    write_json_atomically(target, merged)
    totals = merged["totals"]
    print(f"iso3d-render: merged {len(merged['shards'])} manifest(s): {totals['done']} done, {totals['failed']} "
          f"failed, {totals['flagged']} flagged, {totals['remaining']} remaining -> {target}", file=sys.stderr)
    return 0


def status_main(argv: list[str]) -> int:
    parser = _OneLineParser(prog="iso3d-render status",
                            description="Progress of a render output folder over all its shards.")
    parser.add_argument("out", metavar="DIR", help="the output folder")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.out):
        return _fail(f"{args.out} is not a folder")
    figures = summary(merge(args.out))
    partial = os.path.join(args.out, ".partial")
    shards = sorted(os.listdir(partial)) if os.path.isdir(partial) else []
    figures["rendering"] = sum(len(live_staging_folders(os.path.join(partial, shard))) for shard in shards)
    if args.json:
        print(json.dumps(figures))
        return 0
    total = figures["objects_total"]
    lines = [
        f"objects    {total if total is not None else 'unknown'}",
        f"done       {figures['done']}",
        f"failed     {figures['failed']}",
        f"flagged    {figures['flagged']} (of the done; see the manifests' flags)",
        f"remaining  {figures['remaining'] if figures['remaining'] is not None else 'unknown'}",
        f"rendering  {figures['rendering']} (objects in a live worker's staging folder now)",
    ]
    rate = figures["objects_per_hour"]
    lines.append(f"throughput {rate:.1f} objects/hour (last hour)" if rate else "throughput unknown (under 2 objects "
                 "finished in the last hour)")
    if figures["eta_seconds"] is not None:
        lines.append(f"eta        {_format_duration(figures['eta_seconds'])}")
    print("\n".join(lines))
    return 0


def record_published(manifest: Manifest, items: list, out_dir: str, settings) -> None:
    """Mark done the items whose folders were published but whose results the driver had not taken yet: an
    interrupt between a worker's rename and its message. A resumed run would find them done (its start checks every
    folder); the manifest of the interrupted one says so too."""
    for item in items:
        if item.object_id not in manifest.done and check_done_folder(out_dir, item.object_id, settings) is None:
            manifest.mark_done(item.object_id, item.source, None, object_flags(out_dir, item.object_id))


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, ``kill``): stops the workers and saves the manifest like Ctrl-C."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if argv and argv[0] == "merge":
            return merge_main(argv[1:])
        if argv and argv[0] == "status":
            return status_main(argv[1:])
        return run(build_parser().parse_args(argv))
    except (InputError, RenderSettingsError, ManifestError, ObjaverseUnavailable, WorkerStartError, UserError) as error:
        return _fail(str(error))
    except KeyboardInterrupt as interrupt:
        print("iso3d-render: interrupted; run the same command again to resume", file=sys.stderr)
        return 143 if isinstance(interrupt, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
