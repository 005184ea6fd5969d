"""bench/output_layers.py's variants stay the field's output layers: ``linear`` is the function the field runs, and
every variant computes the linear layer's values and gradients (eagerly; the products-summed form only differs
under torch.compile)."""

from __future__ import annotations

import pytest
import torch

from backend.nerf import field as field_module
from tests.helpers.bench_scripts import bench_script


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_the_variants_equal_the_fields_linear_layers_in_value_and_gradient(dtype):
    """In float32 and under autocast (CPU autocast: bfloat16), for the output layers' 1 and 3 columns. Each output
    column is its own dot product, so no variant changes a value; the tolerance is float32 summation order (a
    matrix product of another shape may block its sums differently)."""
    with bench_script("output_layers") as bench:
        assert bench.VARIANTS["linear"] is field_module._linear
        generator = torch.Generator().manual_seed(3)
        for outputs in (1, 3):
            layer = torch.nn.Linear(64, outputs, bias=False)
            assert outputs < bench.ALIGNED_OUTPUTS
            inputs = torch.randn(500, 2, 64, generator=generator).requires_grad_(True)  # [N, K, 64]: any leading dims
            upstream = torch.randn(500, 2, outputs, generator=generator)
            results = {}
            for name, variant in bench.VARIANTS.items():
                layer.zero_grad()
                with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                    value = variant(layer, inputs)
                (gradient,) = torch.autograd.grad(value, inputs, upstream.to(value.dtype), retain_graph=True)
                value.backward(upstream.to(value.dtype))
                results[name] = (value.detach(), gradient, layer.weight.grad.clone())
            value, gradient, weight_gradient = results["linear"]
            assert weight_gradient.abs().sum() > 0
            tolerance = dict(rtol=1e-5, atol=1e-5) if dtype is None else dict(rtol=torch.finfo(dtype).eps, atol=1e-2)
            for name, (other, other_gradient, other_weight_gradient) in results.items():
                assert other.shape == value.shape and other.dtype == value.dtype, name
                torch.testing.assert_close(other, value, **tolerance, msg=name)
                torch.testing.assert_close(other_gradient, gradient, **tolerance, msg=name)
                torch.testing.assert_close(other_weight_gradient, weight_gradient, rtol=1e-4, atol=1e-3, msg=name)
