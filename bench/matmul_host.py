"""The host's cost of one matrix product of the field's MLPs, by how often its row count repeats (issue 18).

    python bench/matmul_host.py                      # CUDA: the field's products at a 256² step's 1.4 M samples
    python bench/matmul_host.py --device cpu --rows 20000 --calls 20   # smoke run

Why: in the ``reference`` preset's 256² step the GPU is busy ~27 ms and the step takes ~33 ms (bench/RESULTS.md,
2026-12-04, session 14): the GPU waits for its host. In the profile, ``aten::mm`` is the host's costliest operator
by its own time, ~150 µs a call over the 15 products a step of the field's MLPs (forward, the normals' reverse-mode
gradient, backward), where an elementwise operator costs ~14 µs. The visible sample count differs every step, so
each product has a row count cuBLAS has not seen before; if its choice of kernel (its heuristic, which cuBLAS keeps
per shape) is what costs, products whose row counts repeat (``same``) or fall into few buckets (``bucketed``: rows
rounded up to ``--bucket``) cost the host less than ones whose row count is new each call (``new``, as in a run).

Each product's host time is the host clock around the call alone (no synchronisation inside it; the device is
synchronised between calls so that a full launch queue never blocks the host), and its GPU time by CUDA events.
``--blas`` also runs each under ``torch.backends.cuda.preferred_blas_library`` (cublas, cublaslt). On the CPU the
figures are only a smoke test of the script.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

# (name, inner size K, outputs O): the field's products x [N, K] @ w[O, K]^T at the published sizes (a 32-feature
# hash grid, 64-wide hidden layers), and the backward's weight gradient g[N, O]^T @ x[N, K], as [O, N] @ [N, K]
PRODUCTS = (("hidden", 32, 64), ("density_out", 64, 1), ("albedo_out", 64, 3), ("normal_gradient", 64, 32))
ROW_MODES = ("new", "same", "bucketed")


def row_counts(mode: str, rows: int, calls: int, bucket: int) -> list[int]:
    """The row count of each call: ``new``: a different count each call (a run's visible samples), ``same``: one
    count, ``bucketed``: the new counts rounded up to a multiple of ``bucket``."""
    new = [rows + 8 * i + 1 for i in range(calls)]  # odd and distinct, as sample counts are
    if mode == "new":
        return new
    if mode == "same":
        return [rows] * calls
    if mode == "bucketed":
        return [-(-count // bucket) * bucket for count in new]
    raise ValueError(f"unknown row mode {mode!r} (known: {', '.join(ROW_MODES)})")


def measure(device: torch.device, dtype: torch.dtype, inner: int, outputs: int, counts: list[int],
            weight_gradient: bool) -> dict:
    """Median host µs and GPU µs a call of the product over ``counts`` rows (the first call left out: it may
    load a kernel)."""
    largest = max(counts)
    inputs = torch.randn(largest, inner, device=device, dtype=dtype)
    weight = torch.randn(outputs, inner, device=device, dtype=dtype)
    upstream = torch.randn(largest, outputs, device=device, dtype=dtype)
    host_us, gpu_us = [], []
    for count in counts:
        x, g = inputs[:count], upstream[:count]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        begin = time.perf_counter()
        if weight_gradient:
            torch.mm(g.t(), x)
        else:
            torch.mm(x, weight.t())
        host_us.append((time.perf_counter() - begin) * 1e6)
        if device.type == "cuda":
            end.record()
            torch.cuda.synchronize(device)
            gpu_us.append(start.elapsed_time(end) * 1e3)
    host_us, gpu_us = host_us[1:], gpu_us[1:]
    return {"host_us_p50": round(float(np.median(host_us)), 1),
            "gpu_us_p50": round(float(np.median(gpu_us)), 1) if gpu_us else None}


def run(device: torch.device, rows: int, calls: int, bucket: int, blas_libraries: list[str]) -> list[dict]:
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    results = []
    initial = torch.backends.cuda.preferred_blas_library() if device.type == "cuda" else None
    for library in blas_libraries:
        if device.type == "cuda":  # "default": the library torch chose at the start
            torch.backends.cuda.preferred_blas_library(initial if library == "default" else library)
        for name, inner, outputs in PRODUCTS:
            for weight_gradient in (False, True):
                for mode in ROW_MODES:
                    counts = row_counts(mode, rows, calls, bucket)
                    row = {"blas": library, "product": name + ("_weight_gradient" if weight_gradient else ""),
                           "rows": mode, **measure(device, dtype, inner, outputs, counts, weight_gradient)}
                    print(f"[matmul host] {row}", flush=True)
                    results.append(row)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rows", type=int, default=1_400_000, help="the row count (a 256² step's visible samples)")
    parser.add_argument("--calls", type=int, default=60, help="calls per product and row mode")
    parser.add_argument("--bucket", type=int, default=8192, help="the bucketed mode's multiple of rows")
    parser.add_argument("--blas", default="default", help="comma-separated: default, cublas, cublaslt")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    libraries = [name for name in args.blas.split(",") if name]
    unknown = [name for name in libraries if name not in ("default", "cublas", "cublaslt")]
    if unknown or args.rows < 1 or args.calls < 2 or args.bucket < 1:
        print(f"matmul host bench: bad arguments (unknown BLAS {unknown}, rows {args.rows}, calls {args.calls}, "
              f"bucket {args.bucket}; calls must be at least 2)", file=sys.stderr)
        return 2
    if device.type != "cuda" and libraries != ["default"]:
        print("matmul host bench: --blas needs a CUDA device", file=sys.stderr)
        return 2
    results = run(device, args.rows, args.calls, args.bucket, libraries)
    summary = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "date": datetime.date.today().isoformat(), "torch": torch.__version__, "rows": args.rows,
               "calls": args.calls, "bucket": args.bucket, "results": results}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
