"""bench/output_layers.py's variants stay the field's: ``padded`` is the function the field runs, and every variant
computes the linear layer's values (eagerly; the products-summed form only differs under torch.compile)."""

from __future__ import annotations

import torch

from backend.nerf import field as field_module
from tests.helpers.bench_scripts import bench_script


def test_the_variants_are_the_fields_output_layers():
    with bench_script("output_layers") as bench:
        assert bench.VARIANTS["padded"] is field_module._linear
        generator = torch.Generator().manual_seed(0)
        for outputs in (1, 3):
            layer = torch.nn.Linear(64, outputs, bias=False)
            inputs = torch.randn(200, 64, generator=generator)
            expected = layer(inputs)
            for name, variant in bench.VARIANTS.items():
                # float32 summation order: the padded product may block its sums otherwise
                torch.testing.assert_close(variant(layer, inputs), expected, rtol=1e-5, atol=1e-5, msg=name)
