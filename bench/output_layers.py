"""The field's output layers (1 density, 3 albedo columns) three ways, on CUDA (issue 18): correctness and the
field's share of a training step.

    python bench/output_layers.py                       # CUDA, the published field, compiled as the trainer runs it
    python bench/output_layers.py --variants linear     # one variant

Variants:
- ``linear``: the field's way, ``nn.Linear`` as it is; cuBLAS runs the 1- and 3-column matrix products, forward and
  backward, as gemv and misaligned cutlass kernels (2.2 ms of the ``reference`` preset's 256² step, 2026-12-03).
- ``padded``: the weight padded with zero rows to 8 outputs, the result cut back; the field ran it from 2026-12-03
  to 12-04: faster here, but a whole ``reference`` run's 256² step was slower with it (bench/RESULTS.md, 2026-12-04).
- ``products_summed``: the products summed in float32 (Inductor fuses them), the weight's gradient a matrix product,
  in a ``torch.autograd.Function``; tried on 2026-12-03 and not kept: in float32 the compiled field's parameters got
  zero gradients on the H200 (torch 2.11), though not on the CPU.

For each variant: the parameter gradients of the compiled fused field in float32 against the eager torch field's
(as tests/nerf/test_hash_grid_triton.py's compiled-field test: 100,000 points, largest difference over the largest
value), and the median time of a forward with analytic normals and its backward on 1.38 M points inside the initial
blob with float16 MLPs (a ``reference`` 256² step's sample count), over 10 runs after 3.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from unittest.mock import patch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from backend.nerf import field as field_module
from backend.nerf.field import RadianceField
from backend.nerf.presets import FieldConfig
from bench.field_step import timed


ALIGNED_OUTPUTS = 8  # ``padded``: output layers of fewer columns are padded with zero rows to this many


def padded_linear(inputs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(inputs, weight)`` with the weight [O, K] padded by zero rows to ALIGNED_OUTPUTS outputs and the
    result cut back to O: the same values (each output column is its own dot product), in matrix products whose
    rows are 16 bytes of float16."""
    padding_rows = ALIGNED_OUTPUTS - weight.shape[0]
    return F.linear(inputs, F.pad(weight, (0, 0, 0, padding_rows)))[..., :weight.shape[0]]


def padded(layer, inputs):
    if layer.out_features < ALIGNED_OUTPUTS and layer.bias is None:
        return padded_linear(inputs, layer.weight)
    return layer(inputs)


class ProductsSummed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs, weight):
        ctx.save_for_backward(inputs, weight)
        return (inputs.float()[..., None, :] * weight.float()).sum(dim=-1).to(inputs.dtype)

    @staticmethod
    def backward(ctx, grad):
        inputs, weight = ctx.saved_tensors
        grad_inputs = (grad.float()[..., :, None] * weight.float()).sum(dim=-2).to(inputs.dtype)
        grad_weight = torch.mm(grad.reshape(-1, grad.shape[-1]).t().to(inputs.dtype),
                               inputs.reshape(-1, inputs.shape[-1]))
        return grad_inputs, grad_weight.to(weight.dtype)


def products_summed(layer, inputs):
    if layer.out_features < ALIGNED_OUTPUTS and torch.compiler.is_compiling():
        dtype = torch.float16 if torch.is_autocast_enabled("cuda") else torch.float32
        return ProductsSummed.apply(inputs.to(dtype), layer.weight.to(dtype))
    return layer(inputs)


VARIANTS = {"linear": field_module._linear, "padded": padded,
            "products_summed": products_summed}


def gradient_differences(device: torch.device) -> dict:
    torch.manual_seed(9)
    reference = RadianceField(FieldConfig(encoding="torch", compile=False)).to(device)
    fused = RadianceField(FieldConfig()).to(device)
    fused.load_state_dict(reference.state_dict())
    with torch.no_grad():
        reference.encoding.table.uniform_(-1, 1)
        fused.encoding.table.copy_(reference.encoding.table)
    fused.use_compiled()
    points = torch.rand(100_000, 3, device=device) * 2.2 - 1.1
    light = torch.randn_like(points)

    def gradients(field):
        density, albedo, normals = field(points, with_normals=True)
        (density.sin() + albedo.sum(-1) + (normals * light).sum(-1) ** 2).sum().backward()
        return {name: parameter.grad for name, parameter in field.named_parameters()}

    ours, theirs = gradients(fused), gradients(reference)
    return {name: float((ours[name] - theirs[name]).abs().max() / theirs[name].abs().max()) for name in ours}


def step_ms(device: torch.device, samples: int) -> float:
    torch.manual_seed(0)
    field = RadianceField(FieldConfig()).to(device)
    with torch.no_grad():
        field.encoding.table.uniform_(-1, 1)
    field.mlp_autocast_dtype = torch.float16
    field.use_compiled()
    points = torch.nn.functional.normalize(torch.randn(samples, 3, device=device), dim=-1) \
        * torch.rand(samples, 1, device=device) * 0.5
    weights = torch.randn(samples, 7, device=device)

    def step():
        density, albedo, normals = field(points, with_normals=True)
        (density * weights[:, 0] + (albedo * weights[:, 1:4]).sum(-1) + (normals * weights[:, 4:]).sum(-1)).sum() \
            .backward()

    return timed(step, device, warmup=3, repeats=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="linear,padded,products_summed")
    parser.add_argument("--samples", type=int, default=1_380_000)
    parser.add_argument("--json", help="default bench/results/output_layers_<gpu>_<date>.json; '-' for none")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("output_layers: needs a CUDA device", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    results = {"gpu": torch.cuda.get_device_name(device), "date": datetime.date.today().isoformat(),
               "torch": torch.__version__, "samples": args.samples, "variants": {}}
    path = Path(args.json) if args.json else Path(__file__).resolve().parent / "results" / \
        f"output_layers_{results['gpu'].lower().replace('nvidia ', '').split()[0]}_{results['date']}.json"
    for name in args.variants.split(","):
        with patch.object(field_module, "_linear", VARIANTS[name]):
            torch._dynamo.reset()
            row = {"grad_diff_scaled": gradient_differences(device)}
            torch._dynamo.reset()
            row["step_ms_median"] = step_ms(device, args.samples)
        results["variants"][name] = row
        print(f"{name:16s} step {row['step_ms_median']:6.2f} ms  largest gradient difference "
              f"{max(row['grad_diff_scaled'].values()):.1e}", flush=True)
        if args.json != "-":
            path.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
