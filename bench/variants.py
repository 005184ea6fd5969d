"""Variants of the code that bench/generate.py runs beside the code as it is, in one process on one GPU, so that a
change is compared with its alternative on the same machine (H200 machines differ by up to ~10% a step for the same
code: bench/RESULTS.md, 2026-12-04) against one floor measured in that process:

    python bench/generate.py --presets "reference,reference@padded_output_layers" --steps 600

``preset@variant`` runs the preset with the variant's patch in place for the whole run (set-up, steps, final mesh)
and takes it out after (``unittest.mock.patch``); the result carries ``variant``. Most variants replace module-level
names that the code looks up when it runs, so a compiled graph that inlined the old one is traced again (Dynamo
guards on the global); ``triton_matmuls`` sets Inductor's configuration for what is compiled during the run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from unittest.mock import patch

from backend.nerf import field as field_module
from backend.nerf import hash_grid_kernels, hash_grid_triton


def _padded_output_layers() -> AbstractContextManager:
    from bench.output_layers import padded  # the bench's variant of the output layers (8-column products)

    return patch.object(field_module, "_linear", padded)


def _half_table_density() -> AbstractContextManager:
    fused = hash_grid_triton._density

    def density_from_a_half_table(points, table, *rest):
        # a float16 copy of the table (half the bytes the filter's gathers read: the fine levels' tables would fit
        # in the H200's L2), made at each call; the kernel interpolates in float32 from the float16 values
        return fused(points, table.half(), *rest)

    return patch.object(hash_grid_triton, "_density", density_from_a_half_table)


def _merged_mlps() -> AbstractContextManager:
    from bench.merged_mlps import evaluate_with_normals_merged  # the bench's variant of the field's MLP products

    return patch.object(field_module.RadianceField, "_evaluate_with_normals", evaluate_with_normals_merged)


VARIANTS: dict[str, Callable[[], AbstractContextManager]] = {
    # the 1- and 3-column output layers as 8-column products (the field's way from 2026-12-03 to 12-04)
    "padded_output_layers": _padded_output_layers,
    # the table gradient adding point by point, without summing runs of one cell first (before 2026-12-03)
    "unmerged_table_gradient": lambda: patch.object(hash_grid_kernels, "MERGE_RUNS", False),
    # the density filter's fused density (no gradients: which marched samples are visible) reading the table in
    # float16 (tcnn's grid in float16 would do this; the reference's threestudio asks tcnn for float32). Not
    # adopted: on one H200 (2026-12-04, session 14) it changed 4.5 in a million of the filter's decisions and its
    # kernel's 2.38 ms a step to 2.01, but the step's p50 (31.43 against 33.24 ms) moved within the phases' noise
    # (phase 1 went the other way) while the step waits on its host, not on this kernel
    "half_table_density": _half_table_density,
    # the field's MLP products on the visible sample count as it is, new at every step (until 2026-12-04), not on
    # rows padded to a multiple of backend.nerf.field.MLP_ROW_BUCKET
    "unbucketed_mlp_rows": lambda: patch.dict(field_module.MLP_ROW_BUCKET, {"cuda": 1}),
    # the density and albedo MLPs as 3 matrix products forward (hidden layers stacked, output layers
    # block-diagonal) instead of 5, and 6 backward instead of 10 (bench/merged_mlps.py): the same values. Only a
    # field set up inside the run takes it (its compiled function is bound at its set-up)
    "merged_mlps": _merged_mlps,
    # the field's matrix products as Inductor's Triton templates (chosen by timing at compile), not cuBLAS calls:
    # no cuBLAS heuristic on the host at each call, and the ReLU's mask may fuse into the product. Only what is
    # compiled during the run takes it (the field; the UNet and VAE encoder were compiled before, at the model's
    # set-up)
    "triton_matmuls": lambda: patch.multiple("torch._inductor.config", max_autotune_gemm=True,
                                             max_autotune_gemm_backends="TRITON"),
}


def parse_variant(entry: str) -> tuple[str, str | None]:
    """"preset@variant" -> (preset, variant); "preset" -> (preset, None). An unknown variant raises ValueError
    with the known ones."""
    name, _, variant = entry.partition("@")
    if not variant:
        return name, None
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (known: {', '.join(sorted(VARIANTS))})")
    return name, variant


def variant_label(preset: str, variant: str | None) -> str:
    """``parse_variant``'s inverse: "preset@variant", or "preset" for the code as it is."""
    return preset if variant is None else f"{preset}@{variant}"


def variant_context(variant: str | None) -> AbstractContextManager:
    return contextlib.nullcontext() if variant is None else VARIANTS[variant]()
