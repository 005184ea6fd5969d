"""Trajectory benchmark: a preset's real sequential SDS steps, both phases, with a guidance whose target forms a
known object, so the step times, the samples per step and the memory are those of a real run.

    python bench/generate.py                                  # CUDA: fast and reference, published sizes
    python bench/generate.py --presets fast --steps 600       # a shorter trajectory of one preset
    python bench/generate.py --tiny --device cpu --out r.json # smoke run (the test suite runs this)
    python bench/generate.py --caps fast=12,reference=20      # each preset under its GPU memory cap (GiB)
    python bench/generate.py --presets reference,reference@padded_output_layers --steps 600
                                                              # the code beside a variant (bench/variants.py)
    python bench/generate.py --presets "reference:steps=40,reference:steps=full"
                                                              # compile in a short run, then the preset at its
                                                              # own length in the compiled process (a warm service)
    python bench/random_checkpoint.py --out /tmp/random.ckpt && python bench/generate.py --checkpoint /tmp/random.ckpt
                                                              # the model read from a file, as a user's run reads
                                                              # isotropic3d.ckpt (its set-up on the real load path)

What runs: `SDSTrainer.run` itself (occupancy grid, phases, shading schedule, orientation loss, intermediate
meshes, preview renders, checkpoints, final mesh and turntable), with the model `iso3d generate` uses on this
device (published sizes with random weights; on CUDA float16 weights, the guidance UNet compiled with CUDA graphs
and the VAE encoder compiled, as ``--compile auto``). Random weights form no object, so the step's loss is

    loss = 0.5 * sum((render - target)^2) / N  +  sds_weight * (the real SDS loss)

where ``target`` is the known object (two spheres, ``TwoSpheres``) ray-traced exactly with the step's cameras
and the step's shading (albedo / textureless / diffuse with the step's point lights), and the real SDS loss runs
the whole guidance unchanged: the renders resized and VAE-encoded with gradient, the guidance UNet on
[uncond; cond], the x0 target. With ``sds_weight`` 0 (the default) its gradient is zero but autograd still runs
the VAE encoder's backward, so the cost of every step is the real one while the field converges to the known
object; ``chamfer`` then measures the final mesh against it.

A preset's schedules are fractions of its steps, so ``--steps`` (default: 600 on CUDA) runs the preset's
trajectory shape in fewer steps; ``--full`` runs the preset's own step count. Reported per preset: per-phase
median and p90 step time (GPU time between CUDA events around each step, so host stalls count), field samples per
step, peak GPU memory per phase and for the run, the run's wall time (incl. compile when it is the first in the
process), the first intermediate mesh's time, the final mesh's chamfer distance to the known object, and the
wall time of the preset's full step count estimated from the measured phases. The floor (the compiled guidance
UNet at the phase-2 batch + the VAE encoder forward and backward of its views at the latent input size) is
measured in the same process, and phase 1's (``floor_phase1_ms``, its two objects' views) beside it; from both,
``floor_full_steps_s``, what the floor alone takes over the preset's full step count, and
``full_steps_over_floor``, the estimated steps' time over it. ``--warm-rerun`` then runs the first preset again
in a new process on the same compile cache (the warm-cache wall time of a second ``iso3d generate``).

``--profile-steps N`` records N phase-2 steps (``--profile-phase 1``: phase 1's; after the phase's first, compiling
steps) with torch.profiler and the step regions of backend.profiling: milliseconds per step of the occupancy-grid
update, sampling, field, compositing, resize + VAE encode, UNet, backward, optimizer (and a mesh, preview or
checkpoint falling in the window), the rest as ``other``, and the top 15 CUDA kernels; printed and stored as
``profile`` (those steps stay out of the medians), with the GPU's idle time a step and where it waits for the host
(backend.gpu_idle: each gap put down to the region and host operator of the launch that ended it). The floor's VAE
part is also timed eager (``floor_vae_eager_ms``) when the run's is compiled. ``setup_parts_s`` splits the
trainer's set-up (the field, the memory plan's measurements, the guidance and optimiser).

Writes ``bench/results/generate_<gpu>_<yyyy-mm-dd>.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from backend.nerf.field import RadianceField
from backend.nerf.presets import preset
from backend.profiling import compiled_cache_entries, format_profile
from bench.floor import floor_ms, floor_of_run_s
from bench.known_object import TwoSpheres
from bench.source import source_commit
from bench.trajectory import HostProfiles, full_preset, run_preset
from bench.variants import parse_variant, variant_context, variant_label

RESULTS = Path(__file__).resolve().parent / "results"
# The known object's field converges to an opaque silhouette, not to the densities thousands of SDS steps reach:
# its surface is extracted at density 10 (1/world-unit; 44 samples of 0.0068 through the body make opacity 0.95).
TARGET_SETTINGS = {"mesh.density_threshold": "10"}
# --tiny: the 'tiny' preset made smaller still, so the smoke run (the test suite runs it) takes seconds on a CPU.
TINY_SETTINGS = {"phases.resolution_before": "16", "phases.resolution_after": "24", "mesh.resolution": "32",
                 "mesh.preview_resolution": "16", "run.views_resolution": "16", "run.turntable_views": "2",
                 "mesh.density_threshold": "2.0"}


def gpu_label(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device).lower()
    for known in ("h200", "h100", "a100", "a800", "l40s", "4090", "3090", "4080", "4070"):
        if known in name:
            return known
    return name.replace("nvidia", "").strip().replace(" ", "-")


def write_results(path: Path, summary: dict) -> None:
    """The results JSON, replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(json.dumps(summary, indent=2) + "\n")
    temporary.replace(path)


def build_model(args, device: torch.device):
    """The model as ``iso3d generate`` builds it on this device (--compile auto, --dtype auto): from
    ``args.checkpoint`` as ``--checkpoint PATH`` loads it where one is given, else random weights built on the
    device (the published sizes, or ``args.tiny``'s)."""
    from backend.commands.model_options import load_model_from_args

    checkpoint = getattr(args, "checkpoint", None)
    kind = "isotropic3d" if checkpoint else "tiny" if args.tiny else "random"
    namespace = argparse.Namespace(checkpoint=checkpoint, model=kind, device=str(device), dtype="auto", offline=True,
                                   compile=args.compile)
    model = load_model_from_args(namespace)
    unet = getattr(model, "eager_unet", None) or model.unet
    model.unet_context_dim = unet.config.cross_attention_dim
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny model and the 'tiny' preset (CPU smoke run)")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="load the model from this file as `iso3d generate --checkpoint PATH` does (read, cast, "
                        "moved to the device: a user's start-up), e.g. one bench/random_checkpoint.py wrote; default: "
                        "random weights built on the device")
    parser.add_argument("--presets", default=None,
                        help="comma-separated runs (default: fast,reference; tiny with --tiny), each PRESET, "
                        "PRESET@VARIANT (a variant of the code, bench/variants.py) and/or with its own settings "
                        "PRESET:section.key=value;section.key=value, where 'steps=N' or 'steps=full' sets that "
                        "run's steps instead of --steps / --full (e.g. a short run that compiles, then a full one)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps of each run (the preset's schedule shape kept); default 600 on CUDA, the "
                        "preset's own on CPU")
    parser.add_argument("--full", action="store_true", help="run each preset's own step count")
    parser.add_argument("--sds-weight", type=float, default=0.0, help="weight of the real SDS loss (default 0)")
    parser.add_argument("--compile", default="auto", choices=["auto", "off", "default", "cudagraphs"],
                        help="guidance UNet compile, as iso3d generate's --compile (default auto)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.NAME=VALUE",
                        help="a setting on top of each preset (repeatable)")
    parser.add_argument("--caps", default=None, metavar="PRESET=GIB,...",
                        help="each preset under its cap (run.max_gpu_memory), e.g. fast=12,reference=20; without "
                        "--presets, these presets are the runs")
    parser.add_argument("--floor-repeats", type=int, default=20, help="timed floor calls on CUDA (CPU: at most 2)")
    parser.add_argument("--chamfer-samples", type=int, default=50000,
                        help="points sampled on the final mesh for the chamfer distance")
    parser.add_argument("--warm-rerun", action="store_true",
                        help="run the first preset again in a new process (warm compile cache)")
    parser.add_argument("--profile-steps", type=int, default=0, metavar="N",
                        help="record N steps of --profile-phase (after the first, compiling ones) with torch.profiler: "
                        "time per region of the step, where the GPU waits and the top 15 CUDA kernels, printed and "
                        "stored as 'profile'")
    parser.add_argument("--profile-phase", type=int, choices=(1, 2), default=2,
                        help="the phase --profile-steps records (default 2)")
    parser.add_argument("--host-profile", default="", metavar="KIND,...",
                        help="cProfile these parts of each run (setup, final_mesh, final_exports, turntable, "
                        "final_checkpoint, phase1_first_steps, phase2_first_steps, phase1_steps, phase2_steps: 20 "
                        "steps after the first ones): the top functions by cumulative time, stored as "
                        "'host_profiles' (the warm re-run's too); 'model': the model's set-up before the runs "
                        "(imports, building or reading the weights, moving them to the device), stored in the "
                        "results' own 'host_profiles'")
    parser.add_argument("--deadline-s", type=float, default=None, metavar="S",
                        help="S seconds after the model starts loading, the running preset is cancelled at its next "
                        "step and the later ones are not run; what was measured is written (a device call's time "
                        "limit kills the process and loses the run's figures: set this some minutes under it)")
    parser.add_argument("--label", default="", help="a note stored with the results (e.g. 'baseline')")
    parser.add_argument("--out", help="results JSON (default bench/results/generate_<gpu>_<date>.json)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: use --tiny --device cpu for a smoke run", file=sys.stderr)
        return 2
    runs = []  # (preset name, code variant or None, its own settings, its own steps or None) from --presets' entries
    caps = dict(item.split("=", 1) for item in args.caps.split(",")) if args.caps else {}
    for entry in (args.presets or ",".join(caps) or ("tiny" if args.tiny else "fast,reference")).split(","):
        label, _, settings = entry.strip().partition(":")
        if not label:
            continue
        try:
            name, variant = parse_variant(label)
        except ValueError as error:
            print(f"generate bench: {error}", file=sys.stderr)
            return 2
        own = dict(item.split("=", 1) for item in settings.split(";") if item)
        if name in caps:
            own["run.max_gpu_memory"] = caps[name]
        run_steps = own.pop("steps", None)
        if run_steps is not None and run_steps != "full" and not (run_steps.isdigit() and int(run_steps) > 0):
            print(f"generate bench: {entry.strip()}: steps must be a positive whole number or 'full'",
                  file=sys.stderr)
            return 2
        runs.append((name, variant, own, run_steps))
    names = [name for name, _, _, _ in runs]
    steps = None if args.full else (args.steps or (600 if device.type == "cuda" else None))
    overrides = dict(TINY_SETTINGS) if args.tiny else dict(TARGET_SETTINGS)
    overrides.update(item.split("=", 1) for item in args.set)
    if args.tiny and args.steps is None:
        steps = 6
    process_start = time.perf_counter()
    from backend.errors import UserError

    profiled = [kind for kind in args.host_profile.split(",") if kind]  # "model": the set-up below; others: runs
    model_profile = HostProfiles(tuple(kind for kind in profiled if kind == "model"))
    try:
        with model_profile.of("model"):
            model = build_model(args, device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # the set-up's work on the device, waited for where it was queued
    except UserError as error:  # a --checkpoint that is missing or not a model's: one line
        print(f"generate bench: {error}", file=sys.stderr)
        return 2
    model_s = time.perf_counter() - process_start
    reference_points = TwoSpheres().surface_points(20000)
    presets_out: list[dict] = []
    summary = {
        "gpu": gpu_label(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "date": datetime.date.today().isoformat(),
        "commit": source_commit(),
        "label": args.label,
        "torch": torch.__version__,
        "model": getattr(model, "name", "?"),
        "compile": args.compile,
        "model_setup_s": round(model_s, 2),
        **({"host_profiles": model_profile.tables()} if model_profile.kinds else {}),
        "model_source": f"checkpoint {Path(args.checkpoint).name}" if args.checkpoint else "random weights on the device",
        "compile_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
        "presets": presets_out,
    }
    out = Path(args.out) if args.out else RESULTS / f"generate_{summary['gpu']}_{summary['date']}.json"
    deadline = None if args.deadline_s is None else process_start + args.deadline_s
    for name, variant, own, run_steps in runs:
        label = variant_label(name, variant)
        if deadline is not None and time.perf_counter() > deadline:
            print(f"[generate bench] {label}: not run (past --deadline-s)", flush=True)
            presets_out.append({"preset": name, "variant": variant, "overrides": {**overrides, **own},
                                "failed": f"not run: past --deadline-s {args.deadline_s:g}"})
            continue
        print(f"[generate bench] {label} {own or ''}: running", flush=True)
        try:
            with variant_context(variant):
                this_steps = steps if run_steps is None else None if run_steps == "full" else int(run_steps)
                result = run_preset(name, model, device, this_steps, args.sds_weight, reference_points,
                                    {**overrides, **own}, args.profile_steps, args.chamfer_samples,
                                    args.profile_phase, tuple(kind for kind in profiled if kind != "model"),
                                    None if deadline is None else (lambda: time.perf_counter() > deadline))
                # the compiled field's cache entries so far in this process (each call checks them in turn;
                # profile: Dynamo's cache lookup ~0.4 ms a call on the H200's host, 2026-12-04), read while the
                # variant is in place: a variant of the field's methods compiles its own code's entries
                result["field_compiled_entries"] = compiled_cache_entries(
                    {"with_normals": RadianceField._evaluate_with_normals, "without_normals": RadianceField._evaluate})
        except Exception as error:  # noqa: BLE001 -- recorded with its message; the other runs go on
            print(f"[generate bench] {label}: failed: {error}", flush=True)
            presets_out.append({"preset": name, "variant": variant, "overrides": {**overrides, **own},
                                "failed": str(error)[:500]})
            write_results(out, summary)
            continue
        result["variant"] = variant
        result["compiled_before_in_process"] = bool(presets_out)
        presets_out.append(result)
        print(json.dumps({k: v for k, v in result.items() if k not in ("profile", "host_profiles")}), flush=True)
        for kind, rows in result.get("host_profiles", {}).items():
            print(f"[generate bench] {name} host profile of {kind} (cumulative s, own s, calls):\n" + "\n".join(
                f"  {row['cumulative_s']:8.3f} {row['own_s']:8.3f} {row['calls']:8d}  {row['function']}"
                for row in rows), flush=True)
        if "profile" in result:
            print(f"[generate bench] {name} " + format_profile(result["profile"]), flush=True)
        write_results(out, summary)  # after each preset: a run stopped later keeps what it measured
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(1.0, torch.cuda.current_device())  # a capped run's allocator cap lifted
    presets_out[:] = [r for r in presets_out if "failed" not in r] + [r for r in presets_out if "failed" in r]
    measured = [r for r in presets_out if "failed" not in r]
    if not measured:
        write_results(out, summary)
        return 1
    cuda = device.type == "cuda"
    floor = floor_ms(model, device, preset(names[-1]), args.floor_repeats if cuda else min(2, args.floor_repeats),
                     3 if cuda else 1)
    for result in measured:
        result.update(floor)
        result["phase2_step_over_floor"] = round(result["phase2_step_ms_p50"] / floor["floor_ms"], 2)
        result["phase1_step_over_floor"] = round(result["phase1_step_ms_p50"] / floor["floor_phase1_ms"], 2)
        # the preset's full step count: its steps' floor alone, and how far the estimated steps stand above it
        result["floor_full_steps_s"] = floor_of_run_s(floor, full_preset(result["preset"], result["overrides"]))
        result["full_steps_over_floor"] = round(result["wall_s_full_estimate_parts"]["steps"]
                                                / result["floor_full_steps_s"], 2)
    # The first run in the process compiled everything (cold unless the compile cache was warm); later ones ran
    # warm in-process. A warm re-run in a new process gives the first preset's warm-cache wall time.
    first = measured[0]
    first["wall_s_cold"] = first["wall_s"]
    if args.warm_rerun:
        with tempfile.TemporaryDirectory() as folder:
            child = Path(folder) / "warm.json"
            command = [sys.executable, __file__, "--device", args.device, "--presets",
                       variant_label(first["preset"], first["variant"]), "--compile",
                       args.compile, "--sds-weight", str(args.sds_weight), "--floor-repeats", "2", "--out", str(child),
                       "--host-profile", args.host_profile]
            command += ["--steps", str(steps)] if steps else []
            command += ["--tiny"] if args.tiny else []
            command += ["--checkpoint", args.checkpoint] if args.checkpoint else []
            for key, value in first["overrides"].items():
                command += ["--set", f"{key}={value}"]
            subprocess.run(command, check=True)
            warm_summary = json.loads(child.read_text())
            warm = warm_summary["presets"][0]
        first["wall_s_warm"] = warm["wall_s"]
        # the whole warm run (set-up, first steps of each phase, the work between steps), so that what a second
        # process still pays with warm caches can be told apart; and the model's own set-up in that process
        first["warm_rerun"] = {"model_setup_s": warm_summary.get("model_setup_s"),
                               **({"model_host_profiles": warm_summary["host_profiles"]}
                                  if "host_profiles" in warm_summary else {}),
                               **{k: v for k, v in warm.items() if k != "profile"}}
    compile_overhead = first["wall_s"] - first.get("wall_s_warm", first["wall_s"])
    for result in measured[1:]:
        result["wall_s_warm"] = result["wall_s"]  # compiled already in this process
        result["wall_s_cold"] = round(result["wall_s"] + compile_overhead, 2)  # estimate: + the first's overhead
        result["wall_s_cold_is_estimate"] = True
    if "wall_s_warm" not in first:
        first["wall_s_warm"] = None
    write_results(out, summary)
    for r in measured:
        label = variant_label(r["preset"], r["variant"])
        print(f"{label:>9s} {r['steps']} steps: phase 1 p50 {r['phase1_step_ms_p50']} ms, phase 2 p50 "
              f"{r['phase2_step_ms_p50']} / p90 {r['phase2_step_ms_p90']} ms ({r['phase2_step_over_floor']}x floor "
              f"{r['floor_ms']} ms: UNet {r['floor_unet_ms']}, VAE {r['floor_vae_ms']}"
              + (f", VAE eager {r['floor_vae_eager_ms']}" if "floor_vae_eager_ms" in r else "")
              + f"), host work {r['phase2_host_work_ms_p50']} ms of it (waits {r['phase2_host_wait_ms_p50']} ms), "
              f"samples/step {r['samples_per_step_p50']} (of {r['phase2_marched_per_step_p50']} marched), "
              f"peak {r['peak_gib']} GiB, wall "
              f"{r['wall_s']} s"
              + ("" if r["compiled_before_in_process"] or r.get("process_wall_s") is None else
                 f" ({r['process_wall_s']} s from the process's start)")
              + f", full-length estimate {r['wall_s_full_estimate']} s, chamfer {r['chamfer']}")
        print(f"{'':>9s} phase 2 host ms by region (p50): " + ", ".join(
            f"{name} {ms}" for name, ms in r["phase2_host_ms_by_region_p50"].items())
              + "; graphs traced after the first steps: phase 1 "
              f"{r['phase1_graphs_compiled_after_first_steps']}, phase 2 {r['phase2_graphs_compiled_after_first_steps']}"
              f"; the field's compiled entries {r['field_compiled_entries']}")
        if r.get("memory_cap_gib") is not None:
            print(f"{'':>9s} memory: peak {r['peak_gib']} GiB (phase 1 {r['phase1_peak_gib']}) under a cap of "
                  f"{r['memory_cap_gib']} GiB, estimate {r['memory_estimate_gib']} GiB; " + "; ".join(
                      f"phase {n}: VAE checkpointed in chunks of {r.get(f'phase{n}_vae_checkpoint_views')}, "
                      f"{r.get(f'phase{n}_checkpointed_steps')} steps over the sample budget "
                      f"{r.get(f'phase{n}_sample_budget')}" for n in (1, 2)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
