"""Hash-grid encoding benchmark: the torch HashGrid against the fused Triton kernels (issue 18).

    python bench/hash_grid.py                       # CUDA: N = 1M and 4M points, ~30 s; JSON to bench/results/
    python bench/hash_grid.py --compiled            # also the torch path under torch.compile (the trainer's)
    python bench/hash_grid.py --compile-check       # no GPU needed: the kernels compile for sm_90, no fma
    python bench/hash_grid.py --shell --variants --points 1400000,4000000   # a formed object's samples, kernels alone
    python bench/hash_grid.py --device cpu --points 1000 --levels 2 --repeats 1   # smoke run (Triton interpreter)

The grid is FieldConfig's (16 levels x 2 features, 2^19 rows a level; ``--levels`` shrinks it). For each N, with
and without the gradient rows (d features / d x01, what analytic normals use), each implementation is timed with
CUDA events over ``--repeats`` runs after ``--warmup`` ones: the forward alone (no autograd, as mesh extraction and
previews run it) and forward + backward (the table gradient from given output gradients, as a training step runs
it), with the peak memory above what the table, points and output gradients already hold. It also prints the
largest difference of the fused outputs from the torch ones (float32 summation order; see
tests/nerf/test_hash_grid_triton.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from backend.nerf.field import HashGrid
from backend.nerf.presets import FieldConfig

GIB = 2**30


def grid_settings(levels: int | None) -> dict:
    config = FieldConfig()
    return dict(levels=levels or config.levels, features_per_level=config.features_per_level,
                log2_hashmap_size=config.log2_hashmap_size, base_resolution=config.base_resolution,
                per_level_scale=config.per_level_scale)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Milliseconds of one ``fn()``: CUDA events around ``repeats`` calls after ``warmup`` (wall clock on CPU)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / repeats
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) * 1000.0 / repeats


def peak_extra_gib(fn, device: torch.device) -> float | None:
    """GiB allocated at the peak of one ``fn()`` above what was allocated before it (CUDA only)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / GIB


def measure(name: str, grid: HashGrid, encode, x01, with_rows: bool, output_grads, device, args) -> dict:
    def forward():
        with torch.no_grad():
            return encode(x01, with_rows)

    def forward_backward():
        grid.table.grad = None
        outputs = encode(x01, with_rows)
        outputs = outputs if with_rows else (outputs,)
        torch.autograd.backward(outputs, output_grads)

    result = {"implementation": name, "points": x01.shape[0], "gradient_rows": with_rows,
              "forward_ms": timed_ms(forward, device, args.warmup, args.repeats),
              "forward_backward_ms": timed_ms(forward_backward, device, args.warmup, args.repeats),
              "forward_peak_extra_gib": peak_extra_gib(forward, device),
              "forward_backward_peak_extra_gib": peak_extra_gib(forward_backward, device)}
    grid.table.grad = None
    return result


def points_for(args, count: int, device: torch.device) -> torch.Tensor:
    """[count, 3] in the unit cube: uniform, or with ``--ray-ordered`` in runs of 8 consecutive samples along random
    rays one render step apart (the default renderer's 1.732 * 2 / 512 world units, 1/2 of it in the unit cube), in
    the order the renderer packs a step's samples."""
    generator = torch.Generator(device).manual_seed(0)
    if getattr(args, "shell", False):
        return shell_points(count, device)
    if not args.ray_ordered:
        return torch.rand(count, 3, device=device, generator=generator)
    rays = (count + 7) // 8
    origins = torch.rand(rays, 1, 3, device=device, generator=generator)
    directions = torch.nn.functional.normalize(torch.randn(rays, 1, 3, device=device, generator=generator), dim=-1)
    steps = torch.arange(8, device=device, dtype=torch.float32)[None, :, None] * (1.732 / 512)
    return (origins + directions * steps).reshape(-1, 3)[:count].clamp(0.0, 1.0).contiguous()


def shell_points(count: int, device: torch.device, views: int = 4, side: int = 256) -> torch.Tensor:
    """[count, 3] in the unit cube as a formed object's render gives them: the rays of ``views`` views (azimuths 90
    degrees apart, ``side``^2 pixels over the cube's width, parallel rays) that hit a sphere of radius 0.25 around the
    cube's centre, each with the same number of consecutive samples one render step (1.732 / 512) apart from just
    before its surface, as early ray termination leaves them; ray after ray, as the renderer packs them. The
    coarse levels' corners are shared by far more samples than uniform points' are (the table gradient's atomics
    contend as in a real run)."""
    radius, step = 0.25, 1.732 / 512
    u = (torch.arange(side, device=device, dtype=torch.float32) + 0.5) / side - 0.5
    v, u = torch.meshgrid(u, u, indexing="ij")
    hit = u.square() + v.square() < radius**2
    u, v = u[hit], v[hit]
    depth = 0.5 - torch.sqrt(radius**2 - u.square() - v.square())  # from the plane x = 0 (cube units) to the surface
    per_ray = -(-count // (views * u.numel()))
    offsets = (torch.arange(per_ray, device=device, dtype=torch.float32) - 2) * step
    points = []
    for view in range(views):
        angle = 2 * torch.pi * view / views
        direction = torch.tensor([torch.cos(torch.tensor(angle)), torch.sin(torch.tensor(angle)), 0.0], device=device)
        across = torch.tensor([-direction[1], direction[0], 0.0], device=device)
        up = torch.tensor([0.0, 0.0, 1.0], device=device)
        origin = 0.5 - 0.5 * direction + u[:, None] * across + v[:, None] * up  # [rays, 3] on the cube's side
        t = depth[:, None] + offsets[None, :]  # [rays, per_ray]
        points.append(origin[:, None, :] + t[..., None] * direction)
    return torch.cat([p.reshape(-1, 3) for p in points])[:count].clamp(0.0, 1.0).contiguous()


def benchmark(args, device: torch.device) -> dict:
    settings = grid_settings(args.levels)
    reference = HashGrid(**settings, encoding="torch").to(device)
    fused = HashGrid(**settings, encoding="triton").to(device)
    with torch.no_grad():
        reference.table.uniform_(-1.0, 1.0)
        fused.table.copy_(reference.table)
    implementations = [("torch", reference, reference.forward), ("triton", fused, fused.forward)]
    if args.compiled:
        compiled_grid = HashGrid(**settings, encoding="torch").to(device)
        compiled_grid.load_state_dict(reference.state_dict())
        implementations.insert(1, ("torch_compiled", compiled_grid, torch.compile(compiled_grid.forward, dynamic=True)))
    rows = []
    for points in args.points:
        x01 = points_for(args, points, device)
        for with_rows in (False, True):
            width = reference.output_dim
            grads = (torch.randn(points, width, device=device),) + \
                ((torch.randn(points, 3, width, device=device),) if with_rows else ())
            with torch.no_grad():
                expected, ours = reference(x01, with_rows), fused(x01, with_rows)
            expected = expected if with_rows else (expected,)
            ours = ours if with_rows else (ours,)
            differences = [float((a - b).abs().max()) for a, b in zip(ours, expected)]
            del expected, ours
            for name, grid, encode in implementations:
                started = time.perf_counter()
                row = measure(name, grid, encode, x01, with_rows, grads, device, args)
                row["max_abs_difference_from_torch"] = differences if name == "triton" else None
                row["seconds"] = round(time.perf_counter() - started, 2)
                rows.append(row)
                print(f"{name:15s} N={points:>9,} rows={'yes' if with_rows else 'no ':3s} "
                      f"forward {row['forward_ms']:8.2f} ms  forward+backward {row['forward_backward_ms']:8.2f} ms"
                      + (f"  peak +{row['forward_backward_peak_extra_gib']:.2f} GiB"
                         if row["forward_backward_peak_extra_gib"] is not None else ""), flush=True)
            del grads
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return {"grid": settings, "warmup": args.warmup, "repeats": args.repeats, "ray_ordered": args.ray_ordered,
            "shell": args.shell,
            "results": rows}


def variants(args, device: torch.device) -> dict:
    """Kernel times (no autograd: the kernels alone) of the fused encoding, and of its table gradient with the
    coarse levels' adds spread over copies (as the field runs it) and without, on the same points."""
    from backend.nerf import hash_grid_kernels as kernels
    from backend.nerf.hash_grid_triton import spread_rows_of

    settings = grid_settings(args.levels)
    grid = HashGrid(**settings, encoding="torch").to(device)
    with torch.no_grad():
        grid.table.uniform_(-1.0, 1.0)
    table, scales, layout = grid.table.detach(), grid.level_scales, grid.level_layout
    rows_total, features = table.shape
    rows = []
    for points in args.points:
        x01 = points_for(args, points, device)
        width = grid.output_dim
        grad_features = torch.randn(points, width, device=device)
        grad_rows = torch.randn(points, 3, width, device=device)
        with torch.no_grad():
            expected = grid(x01, with_gradient=True)

        def encode(with_rows):
            return kernels.encode(x01, table, scales, layout, with_rows)

        features_out, rows_out = encode(True)
        difference = max(float((features_out - expected[0]).abs().max()), float((rows_out - expected[1]).abs().max()))
        row = {"points": points, "encode_ms": timed_ms(lambda: encode(False), device, args.warmup, args.repeats),
               "encode_rows_ms": timed_ms(lambda: encode(True), device, args.warmup, args.repeats),
               "max_abs_difference_from_torch": difference, "table_gradient": {}}
        print(f"N={points:>9,} encode {row['encode_ms']:6.2f} / with rows {row['encode_rows_ms']:6.2f} ms  "
              f"difference from torch {difference:.1e}", flush=True)
        spread = spread_rows_of(grid.offsets)
        for name, spread_rows, merge_runs in (("spread, runs merged", spread, True), ("spread", spread, False),
                                              ("no spread", 0, False), ("runs merged", 0, True)):
            def gradient(with_rows, spread_rows=spread_rows, merge_runs=merge_runs):
                return kernels.table_gradient(x01, grad_features, grad_rows if with_rows else None, scales, layout,
                                              rows_total, features, spread_rows, merge_runs)

            times = {"spread_rows": spread_rows, "merge_runs": merge_runs,
                     "ms": timed_ms(lambda: gradient(False), device, args.warmup, args.repeats),
                     "rows_ms": timed_ms(lambda: gradient(True), device, args.warmup, args.repeats)}
            row["table_gradient"][name] = times
            print(f"{'':12s} table gradient, {name:19s} {times['ms']:6.2f} / with rows {times['rows_ms']:6.2f} ms",
                  flush=True)
        if args.launch_shapes:
            row["launch_shapes"] = launch_shapes(x01, grid, grad_features, grad_rows, spread, device, args)
        rows.append(row)
    return {"grid": settings, "warmup": args.warmup, "repeats": args.repeats, "ray_ordered": args.ray_ordered,
            "shell": args.shell, "variants": rows}


def launch_shapes(x01, grid, grad_features, grad_rows, spread_rows, device, args) -> dict:
    """Kernel times at other points a program and warps than the module's (``--launch-shapes``): the table
    gradient with rows (as the field runs it) and the fused density (a random density MLP of FieldConfig's width)."""
    from backend.nerf import hash_grid_kernels as kernels

    table, scales, layout = grid.table.detach(), grid.level_scales, grid.level_layout
    rows_total, features = table.shape
    width = FieldConfig().mlp_width
    generator = torch.Generator(device).manual_seed(1)
    hidden = torch.randn(width, grid.output_dim, device=device, generator=generator) / grid.output_dim**0.5
    out = torch.randn(1, width, device=device, generator=generator) / width**0.5
    world = (x01 * 2.0 - 1.0).contiguous()  # radius 1
    saved = kernels.GRADIENT_BLOCK, kernels.GRADIENT_WARPS, kernels.DENSITY_BLOCK, kernels.DENSITY_WARPS
    shapes = {"table_gradient": {}, "density": {}}
    try:
        for block, warps in ((16, 2), (32, 2), (32, 4), (64, 4), (64, 8), (128, 8)):
            kernels.GRADIENT_BLOCK, kernels.GRADIENT_WARPS = block, warps
            ms = timed_ms(lambda: kernels.table_gradient(x01, grad_features, grad_rows, scales, layout, rows_total,
                                                         features, spread_rows),
                          device, args.warmup, args.repeats)
            shapes["table_gradient"][f"{block}x{warps}"] = ms
            print(f"{'':12s} table gradient with rows, {block:4d} points x {warps} warps {ms:6.2f} ms", flush=True)
        kernels.GRADIENT_BLOCK, kernels.GRADIENT_WARPS = saved[:2]
        expected = None
        for block, warps in ((16, 1), (16, 2), (32, 2), (32, 4), (64, 4), (128, 4), (128, 8)):
            kernels.DENSITY_BLOCK, kernels.DENSITY_WARPS = block, warps

            def density():
                return kernels.density(world, table, scales, layout, hidden, out, 1.0, 10.0, 0.5, True)

            values = density()
            expected = values if expected is None else expected
            ms = timed_ms(density, device, args.warmup, args.repeats)
            shapes["density"][f"{block}x{warps}"] = {"ms": ms,
                                                     "max_abs_difference": float((values - expected).abs().max())}
            print(f"{'':12s} density, {block:4d} points x {warps} warps {ms:6.2f} ms", flush=True)
    finally:
        kernels.GRADIENT_BLOCK, kernels.GRADIENT_WARPS, kernels.DENSITY_BLOCK, kernels.DENSITY_WARPS = saved
    return shapes


def compile_check() -> dict:
    """Compile both kernels (every variant) for sm_90 without a GPU; the PTX must hold no fused multiply-add
    (positions ``x * scale + 0.5`` must round as the torch path's do)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from backend.nerf import hash_grid_kernels as kernels

    target = GPUTarget("cuda", 90, 32)
    report = {}
    variants = [(kernels._encode_kernel, ("x_ptr", "table_ptr", "scales_ptr", "layout_ptr", "features_ptr",
                                          "gradient_ptr"), ("n_points",),
                 {"WITH_GRADIENT": flag, "BLOCK_POINTS": kernels.ENCODE_BLOCK}, kernels.ENCODE_WARPS)
                for flag in (False, True)]
    variants += [(kernels._table_gradient_kernel, ("x_ptr", "scales_ptr", "layout_ptr", "grad_features_ptr",
                                                   "grad_gradient_ptr", "table_grad_ptr", "copies_ptr"),
                  ("n_points", "spread_rows"),
                  {"HAS_GRAD_FEATURES": features, "HAS_GRAD_GRADIENT": rows, "SPREAD_COPIES": copies,
                   "MERGE_RUNS": merge, "BLOCK_POINTS": kernels.GRADIENT_BLOCK}, kernels.GRADIENT_WARPS)
                 for features, rows, merge in ((True, False, kernels.MERGE_RUNS), (True, True, kernels.MERGE_RUNS),
                                               (False, True, kernels.MERGE_RUNS), (True, True, not kernels.MERGE_RUNS))
                 for copies in (1, kernels.SPREAD)]  # as the field runs them, and the other merge for --variants
    for kernel, pointer_names, integer_names, flags, warps in variants:
        signature = {name: ("*i64" if name == "layout_ptr" else "*fp32") for name in pointer_names}
        signature.update({name: "i32" for name in integer_names})
        constants = {"LEVELS": 16, "LEVELS_P2": 16, "FEATURES": 2, "FEATURES_P2": 2, **flags}
        signature.update({name: "constexpr" for name in constants})
        compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constants), target=target,
                                  options=dict(kernels.NO_FMA, num_warps=warps))
        ptx = compiled.asm["ptx"]
        name = kernel.__name__ + "".join(f" {key}={value}" for key, value in flags.items())
        report[name] = {"ptx_chars": len(ptx), "fma": ptx.count("fma.")}
        print(f"{name}: {len(ptx):,} PTX characters, {ptx.count('fma.')} fma", flush=True)
        if ptx.count("fma."):
            raise SystemExit(f"hash_grid: {name} has fused multiply-adds: positions would round unlike torch's")
    return report


def device_slug(device: torch.device) -> str:
    if device.type != "cuda":
        return device.type
    return torch.cuda.get_device_name(device).lower().replace("nvidia ", "").split()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--points", type=lambda text: [int(n) for n in text.split(",")], default=[1 << 20, 1 << 22],
                        help="comma-separated point counts (default 1048576,4194304)")
    parser.add_argument("--levels", type=int, default=None, help="fewer levels than FieldConfig's 16 (smoke runs)")
    parser.add_argument("--ray-ordered", action="store_true",
                        help="points in runs along rays, as a step's samples come (default: uniform)")
    parser.add_argument("--shell", action="store_true",
                        help="points where a formed object's render puts them: runs along 4 views' rays from just "
                             "before a sphere's surface (bench.hash_grid.shell_points)")
    parser.add_argument("--variants", action="store_true",
                        help="time the kernels alone on the same points: the encoding, and the table gradient with "
                             "the coarse levels' adds spread over copies (as the field runs it) and without")
    parser.add_argument("--launch-shapes", action="store_true",
                        help="with --variants: also time the table gradient and the fused density at other points "
                             "a program and warps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--compiled", action="store_true", help="also torch.compile the torch path (compiles ~1 min)")
    parser.add_argument("--compile-check", action="store_true", help="only compile the kernels for sm_90 (no GPU)")
    parser.add_argument("--json", help="write the figures here (default bench/results/hash_grid_DEVICE_DATE.json; "
                        "'-' for none)")
    args = parser.parse_args()
    if args.compile_check:
        compile_check()
        return 0
    device = torch.device(args.device)
    if device.type == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are first imported: Triton's CPU interpreter
    elif device.type != "cuda" or not torch.cuda.is_available():
        print(f"hash_grid: no CUDA device for --device {args.device}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (Triton interpreter)",
               "date": datetime.date.today().isoformat(), "torch": torch.__version__}
    try:
        import triton

        results["triton"] = triton.__version__
    except ImportError:
        print("hash_grid: triton is not installed (pip install triton)", file=sys.stderr)
        return 2
    results.update(variants(args, device) if args.variants else benchmark(args, device))
    results["seconds"] = round(time.perf_counter() - started, 1)
    print(f"hash_grid: {results['seconds']} s", flush=True)
    if args.json != "-":
        path = Path(args.json) if args.json else Path(__file__).resolve().parent / "results" / \
            f"hash_grid_{device_slug(device)}_{results['date']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"hash_grid: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
