"""``iso3d generate IMAGE --out asset.glb``: one image to a mesh by SDS, with a progress bar.

Every setting of backend.nerf.presets is an option ``--SECTION.NAME VALUE`` (e.g. ``--mesh.resolution 384``,
``--cameras.fovy_range 20,50``) on top of ``--preset``; the common ones have short forms (--steps, --seed,
--mesh-every). The work folder (default: ``<out>.job`` beside the output) keeps the checkpoint, the latest
intermediate mesh and all final files; ``--resume DIR`` continues an interrupted run from it. With ``--faces N``
the result is finished as ``iso3d export`` does (face budget, UVs + baked texture, LODs, upright placement) and
written as OUT (and OUT's LODs) instead of the raw mesh.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from backend.commands.export import add_finishing_arguments, finish_options, finishing_requested
from backend.commands.model_options import add_model_arguments, load_model_from_args
from backend.errors import UserError, check_writable
from backend.nerf.presets import DEFAULT_PRESET, PRESETS, GenerateConfig, preset
from backend.settings import add_setting_arguments, overrides_from_args, settings_from_dict
from blender_addon.core.atomic_files import copy_file_atomically

GENERATE_FLAG_ALIASES = {"run.steps": ("--steps",), "run.seed": ("--seed",), "run.mesh_every": ("--mesh-every",),
                         "run.max_gpu_memory": ("--max-gpu-memory",)}

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


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
    parser.add_argument("image", nargs="?", help="input image (PNG/JPEG; transparency becomes white)")
    parser.add_argument("--out", default="out/asset.glb", help="output mesh: .glb, .obj or .ply (default %(default)s)")
    parser.add_argument("--workdir", help="work folder (default: OUT's name + '.job' beside it)")
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


def run(args) -> int:
    from backend.events import Done, Failed, MeshUpdate, Progress
    from backend.nerf.trainer import CHECKPOINT_NAME, TURNTABLE_NAME, generate

    out = Path(args.out)
    try:
        if out.suffix.lower() not in (".glb", ".obj", ".ply"):
            raise InputError(f"--out {out}: the mesh format must be .glb, .obj or .ply")
        if not args.resume and not args.image:
            raise InputError("give an input IMAGE (or --resume DIR)")
        config = build_config(args)
        finishing = None
        if finishing_requested(args):
            if "faces" not in finishing_requested(args):
                raise InputError("finishing options need --faces (the face budget that turns finishing on)")
            finishing = finish_options(args, formats=(out.suffix.lower()[1:],))
        image = load_condition_image(args.image) if args.image and not args.resume else None
        workdir = Path(args.resume or args.workdir or out.with_name(out.stem + ".job"))
        if not args.resume and (workdir / CHECKPOINT_NAME).exists():
            raise InputError(f"{workdir} already holds a run: pass --resume {workdir} to continue it, "
                             "or --workdir for a new folder")
        check_writable(out, "--out")
        check_writable(workdir, "--resume" if args.resume else "--workdir" if args.workdir else "the work folder",
                       folder=True)
        model = load_model_from_args(args)
        device = model.device
    except (UserError, ValueError, FileNotFoundError) as error:
        print(f"iso3d generate: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not getattr(model, "trained", True):
        print(f"note: model '{model.name}' is untrained: the result is not a meaningful object", file=sys.stderr)

    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=config.run.steps, unit="step", dynamic_ncols=True)
    status = EXIT_FAILED
    cancel = threading.Event()  # Ctrl-C: save the state and stop at the end of the step; twice: stop now

    def on_interrupt(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    previous = signal.signal(signal.SIGINT, on_interrupt) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        for event in generate(model, config, workdir, image=image, device=device, resume=bool(args.resume),
                              cancel=cancel):
            if isinstance(event, Progress) and bar is not None:
                bar.set_description(event.phase)
                if event.losses:
                    bar.set_postfix(loss=f"{event.losses.get('loss', 0):.4g}", t=int(event.losses.get("t", 0)))
                bar.n = event.step
                bar.refresh()
            elif isinstance(event, MeshUpdate) and bar is not None and not event.final:
                bar.write(f"step {event.step}: mesh with {len(event.faces)} faces -> {workdir}/mesh_latest.ply")
            elif isinstance(event, Failed):
                if bar is not None:
                    bar.close()
                    bar = None
                print(f"iso3d generate: {event.code}: {event.message}", file=sys.stderr)
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
                        print(f"iso3d generate: error: finishing: {error} (the run is kept: re-run the finishing "
                              f"with iso3d export {workdir})", file=sys.stderr)
                        status = EXIT_BAD_INPUT
                        break
                else:
                    copy_file_atomically(event.artifacts[f"mesh{out.suffix.lower()}"], out)
                turntable = out.with_name(out.stem + "_turntable.png")
                copy_file_atomically(event.artifacts[TURNTABLE_NAME], turntable)
                if bar is not None:
                    bar.close()
                    bar = None
                print(f"wrote {out} and {turntable} (all formats and the checkpoint in {workdir})")
                status = EXIT_OK
    except KeyboardInterrupt:
        print(f"\ninterrupted; resume with: iso3d generate --resume {workdir} --out {out}", file=sys.stderr)
        status = EXIT_FAILED
    finally:
        if bar is not None:
            bar.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return status
