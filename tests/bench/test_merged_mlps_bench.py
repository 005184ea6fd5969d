"""bench/merged_mlps.py: the field with its MLPs as fewer, wider products gives the field's values and gradients,
and a field it cannot merge runs as it is."""

from __future__ import annotations

from unittest.mock import patch

import pytest
import torch

from backend.nerf.field import RadianceField
from bench.merged_mlps import evaluate_with_normals_merged, mergeable
from bench.variants import variant_context
from tests.helpers.field_runs import values_and_gradients, varied_field


def test_the_merged_mlps_give_the_fields_values_and_parameter_gradients_in_float64():
    """Each output column is the same dot product over the same inputs, so in float64 the values and every
    parameter's gradient (the zero blocks of the block-diagonal output weight reach no parameter) agree to rounding
    in another summation order."""
    field = varied_field(6).double()
    assert mergeable(field)
    generator = torch.Generator().manual_seed(7)
    points = torch.rand(2000, 3, generator=generator, dtype=torch.float64) * 2.4 - 1.2  # some outside the box
    weights = torch.randn(2000, 3, generator=generator, dtype=torch.float64)
    expected = values_and_gradients(field, points, weights)
    calls = []
    linear = torch.nn.functional.linear

    def counted(inputs, weight, bias=None):
        calls.append(tuple(weight.shape))
        return linear(inputs, weight, bias)

    with variant_context("merged_mlps"), patch("bench.merged_mlps.F.linear", counted):
        got = values_and_gradients(field, points, weights)
    assert sorted(calls) == [(4, 128), (128, 32)]  # two products forward: the stacked hidden, the block-diagonal out
    assert expected[0].abs().sum() > 0 and expected[3].abs().sum() > 0
    for have, want in zip(got, expected):
        torch.testing.assert_close(have, want, rtol=1e-10, atol=1e-12)


def test_the_merged_mlps_take_their_rows_bucketed_as_the_fields_mlps_do(monkeypatch):
    """With the field's MLP rows bucketed (``MLP_ROW_BUCKET``, CUDA's way; forced on the CPU here) the merged
    products run on the padded rows too, so a variant run differs from the field's only in the merging; the values
    and gradients are those of the unpadded merged products (float64: rounding in another summation order)."""
    from backend.nerf import field as field_module

    field = varied_field(6).double()
    generator = torch.Generator().manual_seed(10)
    points = torch.rand(1500, 3, generator=generator, dtype=torch.float64) * 1.6 - 0.8  # not a multiple of 512
    weights = torch.randn(1500, 3, generator=generator, dtype=torch.float64)
    with variant_context("merged_mlps"):
        expected = values_and_gradients(field, points, weights)
        rows_seen = []
        linear = torch.nn.functional.linear

        def counted(inputs, weight, bias=None):
            rows_seen.append(inputs.shape[0])
            return linear(inputs, weight, bias)

        monkeypatch.setitem(field_module.MLP_ROW_BUCKET, "cpu", 512)
        with patch("bench.merged_mlps.F.linear", counted):
            got = values_and_gradients(field, points, weights)
    assert rows_seen == [1536, 1536]
    for have, want in zip(got, expected):
        torch.testing.assert_close(have, want, rtol=1e-10, atol=1e-12)


def test_the_merged_mlps_under_autocast_stay_within_its_rounding():
    """Under the trainer's MLP autocast (CPU autocast: bfloat16, 8 significant bits) the merged products round in
    their own order: the values agree within bfloat16 rounding through two layers, and the outputs stay float32."""
    field = varied_field(6)
    points = torch.rand(2000, 3, generator=torch.Generator().manual_seed(8)) * 1.6 - 0.8
    field.mlp_autocast_dtype = torch.bfloat16
    plain = field(points, with_normals=True)
    with variant_context("merged_mlps"):
        merged = field(points, with_normals=True)
    assert all(value.dtype == torch.float32 for value in merged)
    torch.testing.assert_close(merged[0], plain[0], rtol=2e-2, atol=1e-3)
    torch.testing.assert_close(merged[1], plain[1], rtol=0, atol=1e-2)
    angle = torch.rad2deg(torch.acos((merged[2] * plain[2]).sum(-1).clamp(-1, 1)))
    assert angle.median() < 0.5  # a near-zero gradient's direction is ill-conditioned in a few points


@pytest.mark.parametrize("hidden_layers", [0, 2])
def test_a_field_it_cannot_merge_runs_as_it_is(hidden_layers):
    field = varied_field(6, mlp_hidden_layers=hidden_layers).double()
    assert not mergeable(field)
    points = torch.rand(500, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 1.6 - 0.8
    weights = torch.randn(500, 3, dtype=torch.float64)
    expected = values_and_gradients(field, points, weights)
    with patch.object(RadianceField, "_evaluate_with_normals", evaluate_with_normals_merged):
        got = values_and_gradients(field, points, weights)
    for have, want in zip(got, expected):
        assert torch.equal(have, want)
