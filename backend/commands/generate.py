"""``iso3d generate IMAGE --out asset.glb``: one image to a mesh by SDS, with a progress bar.

Every setting of backend.nerf.presets is an option ``--SECTION.NAME VALUE`` (e.g. ``--mesh.resolution 384``,
``--cameras.fovy_range 20,50``) on top of ``--preset``; the common ones have short forms (--steps, --seed,
--mesh-every). The work folder (default: ``<out>.job`` beside the output) keeps the checkpoint, the latest
intermediate mesh and all final files; ``--resume DIR`` continues an interrupted run from it. With ``--faces N``
the result is finished as ``iso3d export`` does (face budget, UVs + baked texture, LODs, upright placement) and
written as OUT (and OUT's LODs) instead of the raw mesh.

Several images run one after another in one process (``iso3d generate photos/*.png --out 'assets/{name}.glb'``):
the model is loaded and compiled once, so every run after the first starts at once, as a warm service's jobs do.
``{name}`` in OUT is each image's file name without its extension (default ``out/{name}.glb``); each run has its
own work folder beside its output. Every image is checked before the first run; a run that fails does not stop
the others (the exit code says that one failed), Ctrl-C stops the run going on and the ones after it.
"""

from __future__ import annotations

import argparse
import copy
import json
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from backend.commands.batch_outputs import NAME_FIELD, output_paths, run_label
from backend.commands.export import add_finishing_arguments, finish_options, finishing_requested
from backend.commands.model_options import add_model_arguments, load_model_from_args
from backend.errors import UserError, check_writable
from backend.nerf.presets import DEFAULT_PRESET, PRESETS, GenerateConfig, preset
from backend.settings import add_setting_arguments, overrides_from_args, settings_from_dict
from blender_addon.core.atomic_files import copy_file_atomically

GENERATE_FLAG_ALIASES = {"run.steps": ("--steps",), "run.seed": ("--seed",), "run.mesh_every": ("--mesh-every",),
                         "run.max_gpu_memory": ("--max-gpu-memory",)}

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_OUT, DEFAULT_BATCH_OUT = "out/asset.glb", "out/{name}.glb"  # {name}: backend.commands.batch_outputs
MESH_SUFFIXES = (".glb", ".obj", ".ply")


class InputError(UserError):
    """Bad input the user can fix; the message says what and how."""


def load_condition_image(path: str | Path):
    """The input image as a tensor [1, 3, 256, 256] in [-1, 1], prepared as the reference SDS path does."""
    from backend.imaging import load_image, prepare_condition_image

    return prepare_condition_image(load_image(path))


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate", help="image -> 3-D mesh (GLB/OBJ/PLY) by SDS", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="*", help="input image(s) (PNG/JPEG; transparency becomes white); several run "
                        "one after another in this process, the model loaded and compiled once")
    parser.add_argument("--out", default=None,
                        help="output mesh: .glb, .obj or .ply; {name} in it stands for the image's file name without "
                        f"its extension (default {DEFAULT_OUT}, with several images {DEFAULT_BATCH_OUT})")
    parser.add_argument("--workdir", help="work folder (default: OUT's name + '.job' beside it; one image only)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                        help="settings preset (default %(default)s)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run whose work folder is DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    # On a GPU: float16 weights and the guidance UNet compiled with CUDA graphs (it runs without gradients; 6.9 ms
    # instead of 38 ms per call at the published size), compiled once in the first steps.
    add_model_arguments(parser, default_compile="auto")
    add_finishing_arguments(parser, title="finishing (with --faces; see iso3d export)")
    add_setting_arguments(parser, preset(DEFAULT_PRESET), title="settings (every field of backend.nerf.presets; "
                          "defaults of the 'fast' preset)", aliases=GENERATE_FLAG_ALIASES)
    return parser


def build_config(args) -> GenerateConfig:
    if args.resume:
        saved = Path(args.resume) / "config.json"
        if not saved.is_file():
            raise InputError(f"cannot resume: {saved} does not exist")
        config = GenerateConfig.from_dict(json.loads(saved.read_text()))
    else:
        config = preset(args.preset)
    return settings_from_dict(config, overrides_from_args(args))


def turntable_path(out: Path) -> Path:
    """The turntable image written beside the mesh ``out`` (OUT_turntable.png)."""
    return out.with_name(out.stem + "_turntable.png")


@dataclass
class PlannedRun:
    """One image's run: its input (None: resumed from its work folder), output mesh and work folder."""

    image_path: str | None
    out: Path
    workdir: Path


def plan_runs(args) -> list[PlannedRun]:
    """Each run's output and work folder from the command line, every input checked (InputError otherwise)."""
    images = list(args.image or [])
    if args.resume:
        if images:
            raise InputError("--resume continues one run from its work folder: give no IMAGE with it")
        if NAME_FIELD in (args.out or ""):
            raise InputError(f"--out {args.out}: {NAME_FIELD} stands for an image's name; a resumed run has no image")
        (out,) = output_paths([args.resume], args.out, DEFAULT_OUT, DEFAULT_OUT, MESH_SUFFIXES)
        return [PlannedRun(None, out, Path(args.resume))]
    if not images:
        raise InputError("give an input IMAGE (or --resume DIR)")
    if len(images) > 1 and args.workdir:
        raise InputError("--workdir is one run's folder: with several images each run's is its OUT's name + '.job'")
    outs = output_paths(images, args.out, DEFAULT_OUT, DEFAULT_BATCH_OUT, MESH_SUFFIXES)
    runs = []
    for image_path, out in zip(images, outs):
        workdir = Path(args.workdir) if args.workdir else out.with_name(out.stem + ".job")
        runs.append(PlannedRun(image_path, out, workdir))
    return runs


def run(args) -> int:
    from backend.imaging import load_image
    from backend.nerf.trainer import CHECKPOINT_NAME

    try:
        runs = plan_runs(args)
        config = build_config(args)
        finishing = None
        if finishing_requested(args):
            if "faces" not in finishing_requested(args):
                raise InputError("finishing options need --faces (the face budget that turns finishing on)")
            finishing = finish_options(args, formats=(runs[0].out.suffix.lower()[1:],))
        for planned in runs:  # every input read and every place checked before the first run
            if planned.image_path is not None:
                load_image(planned.image_path)  # readable; prepared at its run: a batch holds one at a time
                if (planned.workdir / CHECKPOINT_NAME).exists():
                    raise InputError(f"{planned.workdir} already holds a run: pass --resume {planned.workdir} to "
                                     "continue it, or --workdir (or another --out) for a new folder")
            check_writable(planned.out, "--out")
            check_writable(turntable_path(planned.out), "the turntable image")
            check_writable(planned.workdir, "--resume" if args.resume else "--workdir" if args.workdir
                           else "the work folder", folder=True)
        model = load_model_from_args(args)
    except (UserError, ValueError, FileNotFoundError) as error:
        print(f"iso3d generate: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not getattr(model, "trained", True):
        print(f"note: model '{model.name}' is untrained: the result is not a meaningful object", file=sys.stderr)

    cancel = threading.Event()  # Ctrl-C: save the state and stop at the end of the step; twice: stop now

    def on_interrupt(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    previous = signal.signal(signal.SIGINT, on_interrupt) if threading.current_thread() is threading.main_thread() \
        else None
    statuses: dict[str, int] = {}
    try:
        for number, planned in enumerate(runs, start=1):
            label = run_label(number, len(runs), planned.out)
            statuses[str(planned.out)] = run_one(model, copy.deepcopy(config), planned, finishing, args, cancel,
                                                 label)
            if cancel.is_set():
                break
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if len(runs) > 1:
        unfinished = [out for out, status in statuses.items() if status != EXIT_OK]
        interrupted = unfinished[-1:] if cancel.is_set() else []  # the run Ctrl-C stopped (resumable)
        failed = unfinished[:len(unfinished) - len(interrupted)]
        not_run = [str(planned.out) for planned in runs[len(statuses):]]
        print(f"{len(statuses) - len(unfinished)} of {len(runs)} written"
              + (f"; failed: {', '.join(failed)}" if failed else "")
              + (f"; interrupted: {', '.join(interrupted)}" if interrupted else "")
              + (f"; not run: {', '.join(not_run)}" if not_run else ""))
        if not_run:
            return EXIT_FAILED
    return max(statuses.values(), default=EXIT_FAILED)


def run_one(model, config: GenerateConfig, planned: PlannedRun, finishing, args, cancel: threading.Event,
            label: str = "") -> int:
    """One run, its progress bar and its outputs (OUT, OUT_turntable.png); the exit code it earns."""
    from backend.events import Done, Failed, MeshUpdate, Progress
    from backend.nerf.trainer import TURNTABLE_NAME, generate

    out, workdir, device = planned.out, planned.workdir, model.device
    try:
        image = load_condition_image(planned.image_path) if planned.image_path is not None else None
    except UserError as error:  # read well before the first run; changed or gone since
        print(f"iso3d generate: error: {label}{error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=config.run.steps, unit="step", dynamic_ncols=True)
    status = EXIT_FAILED
    try:
        for event in generate(model, config, workdir, image=image, device=device,
                              resume=planned.image_path is None, cancel=cancel):
            if isinstance(event, Progress) and bar is not None:
                bar.set_description(label + event.phase)
                if event.losses:
                    bar.set_postfix(loss=f"{event.losses.get('loss', 0):.4g}", t=int(event.losses.get("t", 0)))
                bar.n = event.step
                bar.refresh()
            elif isinstance(event, MeshUpdate) and bar is not None and not event.final:
                bar.write(f"{label}step {event.step}: mesh with {len(event.faces)} faces -> {workdir}/mesh_latest.ply")
            elif isinstance(event, Failed):
                if bar is not None:
                    bar.close()
                    bar = None
                print(f"iso3d generate: {label}{event.code}: {event.message}", file=sys.stderr)
                if event.code == "cancelled":
                    print(f"resume with: iso3d generate --resume {workdir} --out {out}", file=sys.stderr)
                status = EXIT_FAILED
            elif isinstance(event, Done):
                out.parent.mkdir(parents=True, exist_ok=True)
                if finishing is not None:
                    from backend.finishing.pipeline import finish_job

                    try:
                        finish_job(workdir, out.parent, finishing, device=str(device), name=out.stem)
                    except UserError as error:
                        print(f"iso3d generate: error: {label}finishing: {error} (the run is kept: re-run the "
                              f"finishing with iso3d export {workdir})", file=sys.stderr)
                        status = EXIT_BAD_INPUT
                        break
                else:
                    copy_file_atomically(event.artifacts[f"mesh{out.suffix.lower()}"], out)
                turntable = turntable_path(out)
                copy_file_atomically(event.artifacts[TURNTABLE_NAME], turntable)
                if bar is not None:
                    bar.close()
                    bar = None
                print(f"{label}wrote {out} and {turntable} (all formats and the checkpoint in {workdir})")
                status = EXIT_OK
    except KeyboardInterrupt:
        cancel.set()
        print(f"\ninterrupted; resume with: iso3d generate --resume {workdir} --out {out}", file=sys.stderr)
        status = EXIT_FAILED
    finally:
        if bar is not None:
            bar.close()
    return status
