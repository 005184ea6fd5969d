"""bench/variants.py: a variant replaces the one name the running code looks up, for its block only, and
bench/generate.py refuses an unknown one before it builds anything."""

from __future__ import annotations

from unittest.mock import patch

import pytest
import torch

from backend.nerf import field as field_module
from backend.nerf import hash_grid_kernels, hash_grid_triton
from bench.variants import VARIANTS, parse_variant, variant_context, variant_label
from tests.helpers.bench_scripts import bench_script


def test_each_variant_replaces_its_names_in_its_block_and_restores_them_even_after_an_error():
    import torch._inductor.config as inductor_config

    watched = {"padded_output_layers": [(field_module, "_linear")],
               "unmerged_table_gradient": [(hash_grid_kernels, "MERGE_RUNS")],
               "half_table_density": [(hash_grid_triton, "_density")],
               "unbucketed_mlp_rows": [(field_module, "MLP_ROW_BUCKET")],
               "merged_mlps": [(field_module.RadianceField, "_evaluate_with_normals")],
               "triton_matmuls": [(inductor_config, "max_autotune_gemm"),
                                  (inductor_config, "max_autotune_gemm_backends")]}
    assert set(watched) == set(VARIANTS)
    original_linear = field_module._linear
    for variant, names in watched.items():
        # a name's value, or a copy of the dict it holds (a variant may change the dict's entries in place)
        before = [dict(value) if isinstance(value := getattr(owner, name), dict) else value for owner, name in names]
        with variant_context(variant):
            assert all(getattr(owner, name) != value for (owner, name), value in zip(names, before)), variant
        assert [getattr(owner, name) for owner, name in names] == before
        with pytest.raises(RuntimeError), variant_context(variant):
            raise RuntimeError("a run that failed")
        assert [getattr(owner, name) for owner, name in names] == before, variant
    with variant_context(None):  # no variant: the code as it is
        assert field_module._linear is original_linear
    with variant_context("triton_matmuls"):  # Inductor's Triton templates only, chosen by timing
        assert inductor_config.max_autotune_gemm and inductor_config.max_autotune_gemm_backends == "TRITON"


def test_the_field_runs_what_the_patched_name_holds():
    """The MLPs look ``_linear`` up when they run, so a variant reaches them (eagerly here; compiled, Dynamo's guard
    on the global traces them again)."""
    calls = []

    def spy(layer, inputs):
        calls.append(layer.out_features)
        return layer(inputs)

    network = field_module.mlp(8, 3, 16, 1)
    inputs = torch.randn(5, 8)
    with patch.object(field_module, "_linear", spy):
        outputs = field_module.mlp_forward(network, inputs)
    assert calls == [16, 3]
    torch.testing.assert_close(outputs, network(inputs))
    with variant_context("padded_output_layers"):
        padded = field_module.mlp_forward(network, inputs)
    torch.testing.assert_close(padded, outputs, rtol=1e-5, atol=1e-6)  # float32 summation order of another shape


def test_the_half_table_density_is_the_fields_density_within_the_tables_float16_rounding():
    """The fused density (Triton's interpreter here) with the table read in float16: each corner value off by at
    most 2^-11 of itself, so each feature by at most ~5e-4 (the table is in [-1, 1]); the freshly initialised
    density MLP carries that into the raw density scaled down by its small weights, next to the blob's term: 3.3e-6
    of the largest density here, bounded at 1e-4."""
    from backend.nerf.field import RadianceField
    from backend.nerf.presets import FieldConfig

    torch.manual_seed(4)
    field = RadianceField(FieldConfig(encoding="triton", log2_hashmap_size=15))  # hashed levels, a small table
    with torch.no_grad():
        field.encoding.table.uniform_(-1, 1)
        points = torch.rand(1000, 3) * 1.6 - 0.8  # one program of the interpreter
        assert field.uses_fused_density(points)
        exact = field.density(points)
        with variant_context("half_table_density"):
            half = field.density(points)
    difference = (half - exact).abs().max() / exact.abs().max()
    assert 0 < difference < 1e-4, difference  # rounded (not equal), and close


def test_an_unknown_variant_is_refused_in_one_line_before_anything_is_built(capsys):
    assert parse_variant("reference") == ("reference", None)
    assert parse_variant("reference@padded_output_layers") == ("reference", "padded_output_layers")
    for label in ("reference", "reference@padded_output_layers"):
        assert variant_label(*parse_variant(label)) == label
    with pytest.raises(ValueError, match="unknown variant 'nope'.*padded_output_layers"):
        parse_variant("reference@nope")
    with bench_script("generate") as bench:
        assert bench.main(["--tiny", "--device", "cpu", "--presets", "tiny@nope"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("generate bench: unknown variant 'nope'") and "\n" not in error
