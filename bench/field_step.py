"""The field's share of an SDS step, by MLP precision: forward with analytic normals + backward, and the density-only
query of the sampler, at the sample counts of a real step (issue 18).

    python bench/field_step.py                          # CUDA, the published field, compiled as the trainer runs it
    python bench/field_step.py --device cpu --samples 20000 --repeats 2 --no-compile   # smoke run
    python bench/field_step.py --precisions float16 --code-variants none,half_table_density
                                                        # the trainer's precision beside variants of the code

Variants: ``float32`` (the MLPs in float32, cuBLAS's FFMA kernels), ``tf32`` (float32 with TF32 tensor cores
allowed for matmuls) and ``float16`` (the MLPs under float16 autocast: ``RadianceField.mlp_autocast_dtype``, the
reference's ``16-mixed``). Points are drawn inside the initial density blob (radius 0.5, where samples lie); the loss
is a fixed random projection of density, albedo and normals, so every output gets a gradient. Each variant is timed
with CUDA events over ``--repeats`` runs after ``--warmup`` ones (the first compiles), and its outputs are compared
with the float32 ones: density relative error and the normals' angle, which a float16 MLP must keep small.
``--code-variants`` runs each precision also under variants of the code (bench/variants.py; ``none``: the code as
it is), each compared with the first row: the field's share alone, which a whole run's step may not follow
(bench/generate.py ``PRESET@VARIANT`` times that).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from backend.nerf.field import RadianceField
from backend.nerf.presets import FieldConfig, RendererConfig
from bench.variants import VARIANTS as CODE_VARIANTS
from bench.variants import variant_context

VARIANTS = ("float32", "tf32", "float16")
RENDERER = RendererConfig()  # the reference's render step and alpha threshold (the density filter's decisions)


@contextlib.contextmanager
def tf32(enabled: bool):
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def make_field(variant: str, device: torch.device, compiled: bool) -> RadianceField:
    torch.manual_seed(0)
    field = RadianceField(FieldConfig()).to(device)
    with torch.no_grad():  # a table with structure, not the initial +-1e-4 (normals of a near-constant field are noise)
        field.encoding.table.uniform_(-1.0, 1.0)
    field.mlp_autocast_dtype = torch.float16 if variant == "float16" else None
    if compiled:
        field.use_compiled()
    return field


def timed(function, device: torch.device, warmup: int, repeats: int) -> float:
    """Median milliseconds of ``function()``."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            function()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            function()
            times.append((time.perf_counter() - begin) * 1e3)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--samples", type=int, default=1_400_000,
                        help="samples with gradients (reference phase 2 median: 1.4 M)")
    parser.add_argument("--query-samples", type=int, default=4_000_000,
                        help="density-only samples of the sampler's alpha query")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--precisions", default=",".join(VARIANTS), help="comma-separated, of " + ", ".join(VARIANTS))
    parser.add_argument("--code-variants", default="none",
                        help="comma-separated variants of the code (bench/variants.py), 'none' for the code as it is")
    args = parser.parse_args(argv)
    precisions = [name for name in args.precisions.split(",") if name]
    code_variants = [None if name == "none" else name for name in args.code_variants.split(",") if name]
    unknown = [name for name in precisions if name not in VARIANTS] + \
        [name for name in code_variants if name is not None and name not in CODE_VARIANTS]
    if unknown:
        print(f"field_step: unknown {', '.join(unknown)} (precisions: {', '.join(VARIANTS)}; code variants: "
              f"{', '.join(sorted(CODE_VARIANTS))})", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    generator = torch.Generator(device).manual_seed(1)
    direction = torch.randn(args.samples, 3, device=device, generator=generator)
    radius = 0.5 * torch.rand(args.samples, 1, device=device, generator=generator) ** (1 / 3)
    points = direction / direction.norm(dim=-1, keepdim=True) * radius
    query = points.repeat((args.query_samples + args.samples - 1) // args.samples, 1)[:args.query_samples]
    projection = torch.randn(args.samples, 7, device=device, generator=generator)

    results: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "date": datetime.date.today().isoformat(), "torch": torch.__version__,
                     "samples": args.samples, "query_samples": args.query_samples, "compiled": not args.no_compile,
                     "variants": {}}
    reference_outputs = None
    for variant, code_variant in [(precision, code) for precision in precisions for code in code_variants]:
        if variant == "tf32" and device.type != "cuda":
            continue
        label = variant if code_variant is None else f"{variant}@{code_variant}"
        repeat = sum(1 for name in results["variants"] if name.split(" ")[0] == label)
        label += f" ({repeat + 1})" if repeat else ""  # a row run again (timing drift) keeps its own figures
        torch._dynamo.reset()  # each row compiles its own graphs (a variant's patch is seen by a fresh trace)
        with tf32(variant == "tf32"), variant_context(code_variant):
            field = make_field(variant, device, compiled=not args.no_compile)  # a variant of its methods: bound here
            def train_pass():
                density, albedo, normals = field(points, with_normals=True)
                outputs = torch.cat([density[:, None], albedo, normals], dim=-1)
                (outputs * projection).sum().backward()
                field.zero_grad(set_to_none=True)

            @torch.no_grad()
            def query_pass():
                field.density(query)

            train_ms = timed(train_pass, device, args.warmup, args.repeats)
            query_ms = timed(query_pass, device, args.warmup, args.repeats)
            with torch.no_grad():
                density, albedo, normals = field(points, with_normals=True)
                queried = field.density(query)
        row = {"train_fwd_bwd_ms": round(train_ms, 3), "density_query_ms": round(query_ms, 3)}
        if reference_outputs is None:
            reference_outputs = (density, albedo, normals, queried)
        else:
            ref_density, ref_albedo, ref_normals, ref_queried = reference_outputs
            # the density filter's query: its densities, and how many of its keep-or-drop decisions (alpha at the
            # reference's render step against its alpha threshold) differ from the first row's
            row["query_density_max_rel_error"] = float(
                ((queried - ref_queried).abs() / ref_queried.abs().clamp(min=1e-3)).max())
            step, threshold = RENDERER.render_step, RENDERER.alpha_threshold
            kept = 1.0 - torch.exp(-queried * step) >= threshold
            ref_kept = 1.0 - torch.exp(-ref_queried * step) >= threshold
            row["filter_decisions_changed"] = float((kept != ref_kept).float().mean())
            row["density_max_rel_error"] = float(((density - ref_density).abs() / ref_density.abs().clamp(min=1e-3))
                                                 .max())
            row["albedo_max_abs_error"] = float((albedo - ref_albedo).abs().max())
            cosine = (normals * ref_normals).sum(dim=-1).clamp(-1.0, 1.0)
            angles = torch.rad2deg(torch.acos(cosine))
            row["normal_angle_deg_p50"] = float(angles.median())
            row["normal_angle_deg_p99"] = float(torch.quantile(angles[:100_000].float(), 0.99))
        results["variants"][label] = row
        print(f"[field step] {label}: {row}", flush=True)
        if args.json:  # after each row: a run stopped later keeps what it measured
            args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
