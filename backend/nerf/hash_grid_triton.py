"""The fused hash-grid encoding: the Triton kernels of backend.nerf.hash_grid_kernels as torch ops with autograd.

``fused_encode(x01, table, scales, layout, with_gradient, spread_rows)`` returns what ``HashGrid.forward`` returns
(features [N, L*F], and with ``with_gradient`` the gradient rows [N, 3, L*F]) in one kernel launch for all levels,
without the torch path's per-level [N, 8, 3] int64 temporaries; its backward is one launch of atomic adds into a
float32 table gradient (the coarse levels' first ``spread_rows`` rows spread over copies: ``spread_rows_of``).
Positions get **no gradient**: they are not trained (the renderer's samples and the mesh's grid points are
constants) and the analytic normals are computed forward (the gradient rows), so only the ``autograd`` normals
(a double backward through the positions) need d features / d x01; ``HashGrid`` keeps the torch path there.

The ops are ``torch.library`` custom ops (the autograd-function form torch.compile keeps as one opaque call rather
than tracing into Triton's launcher), so the compiled field calls them as they are.

``fused_density`` is the field's density without gradients in one kernel (the hash grid, the density MLP and the
blob's softplus), for the queries that need no gradient: the renderer's density filter over every marched sample,
the occupancy grid's updates, the mesh's density grid.

Equal to the torch reference within float32 summation order: the same positions, corners, indices and weights,
summed in another order (8 corners in sequence here, torch's reduction there; the table gradient's atomic adds in
whatever order the GPU runs them). tests/nerf/test_hash_grid_triton.py states the tolerances.
"""

from __future__ import annotations

import importlib.util
import os

import torch

TRITON_INSTALLED = importlib.util.find_spec("triton") is not None

# The table gradient's adds to the coarse levels (the first levels, up to this many table rows together) go to
# copies summed after the kernel (backend.nerf.hash_grid_kernels): on a formed object's samples the levels up to
# 2^20 rows (FieldConfig's first five) gained over the first three (bench/hash_grid.py --variants --shell).
SPREAD_ROWS_LIMIT = 1 << 20


def spread_rows_of(offsets: list[int]) -> int:
    """Rows of the whole first levels (level offsets ``offsets``) that fit in SPREAD_ROWS_LIMIT: what the table
    gradient spreads."""
    return max([offset for offset in offsets if offset <= SPREAD_ROWS_LIMIT], default=0)


def unavailable_reason(device: torch.device) -> str | None:
    """Why the fused encoding cannot run on ``device`` (None: it can)."""
    if not TRITON_INSTALLED:
        return "triton is not installed (pip install triton; CUDA builds of torch bring it)"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None  # Triton's interpreter runs the kernels on CPU tensors (slowly: for tests)
    return f"the fused hash-grid encoding runs on CUDA devices, not on {device.type}"


def _kernels():
    from backend.nerf import hash_grid_kernels

    return hash_grid_kernels


@torch.library.custom_op("iso3d::hash_grid_features", mutates_args=())
def _features(x01: torch.Tensor, table: torch.Tensor, scales: torch.Tensor, layout: torch.Tensor,
              spread_rows: int) -> torch.Tensor:
    return _kernels().encode(x01.contiguous(), table.contiguous(), scales, layout, False)[0]


@torch.library.custom_op("iso3d::hash_grid_features_and_gradient", mutates_args=())
def _features_and_gradient(x01: torch.Tensor, table: torch.Tensor, scales: torch.Tensor, layout: torch.Tensor,
                           spread_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _kernels().encode(x01.contiguous(), table.contiguous(), scales, layout, True)


@torch.library.custom_op("iso3d::hash_grid_table_gradient", mutates_args=())
def _table_gradient(x01: torch.Tensor, grad_features: torch.Tensor | None, grad_gradient: torch.Tensor | None,
                    scales: torch.Tensor, layout: torch.Tensor, table_rows: int, features: int,
                    spread_rows: int) -> torch.Tensor:
    def prepared(grad):
        return None if grad is None else grad.to(torch.float32).contiguous()

    return _kernels().table_gradient(x01.contiguous(), prepared(grad_features), prepared(grad_gradient), scales,
                                     layout, table_rows, features, spread_rows)


@torch.library.custom_op("iso3d::hash_grid_density", mutates_args=())
def _density(points: torch.Tensor, table: torch.Tensor, scales: torch.Tensor, layout: torch.Tensor,
             hidden_weight: torch.Tensor, out_weight: torch.Tensor, radius: float, blob_density: float,
             blob_radius: float, half: bool) -> torch.Tensor:
    return _kernels().density(points.contiguous(), table.contiguous(), scales, layout, hidden_weight.contiguous(),
                              out_weight.contiguous(), radius, blob_density, blob_radius, half)


@_density.register_fake
def _(points, table, scales, layout, hidden_weight, out_weight, radius, blob_density, blob_radius, half):
    return points.new_empty(points.shape[0], dtype=torch.float32)


@_features.register_fake
def _(x01, table, scales, layout, spread_rows):
    return x01.new_empty(x01.shape[0], scales.shape[0] * table.shape[1], dtype=torch.float32)


@_features_and_gradient.register_fake
def _(x01, table, scales, layout, spread_rows):
    width = scales.shape[0] * table.shape[1]
    return (x01.new_empty(x01.shape[0], width, dtype=torch.float32),
            x01.new_empty(x01.shape[0], 3, width, dtype=torch.float32))


@_table_gradient.register_fake
def _(x01, grad_features, grad_gradient, scales, layout, table_rows, features, spread_rows):
    return x01.new_empty(table_rows, features, dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    x01, table, scales, layout, spread_rows = inputs
    ctx.save_for_backward(x01, scales, layout)  # the table gradient does not depend on the table's values
    ctx.table_shape = tuple(table.shape)
    ctx.spread_rows = spread_rows


def _features_backward(ctx, grad_features):
    x01, scales, layout = ctx.saved_tensors
    rows, features = ctx.table_shape
    gradient = _table_gradient(x01, grad_features, None, scales, layout, rows, features, ctx.spread_rows)
    return None, gradient, None, None, None


def _features_and_gradient_backward(ctx, grad_features, grad_gradient):
    x01, scales, layout = ctx.saved_tensors
    rows, features = ctx.table_shape
    gradient = _table_gradient(x01, grad_features, grad_gradient, scales, layout, rows, features, ctx.spread_rows)
    return None, gradient, None, None, None


_features.register_autograd(_features_backward, setup_context=_setup_context)
_features_and_gradient.register_autograd(_features_and_gradient_backward, setup_context=_setup_context)


def fused_encode(x01: torch.Tensor, table: torch.Tensor, scales: torch.Tensor, layout: torch.Tensor,
                 with_gradient: bool, spread_rows: int = 0):
    """Features [N, L*F] (and gradient rows [N, 3, L*F]) of positions x01 [N, 3] float32 in [0, 1] (clamped there;
    NaN taken as 0). ``scales`` [L] float32 and ``layout`` [L, 3] int64 (row offset, vertices a side or 0 for a
    hashed level, hash mask) describe the levels (``HashGrid`` builds them); ``spread_rows`` (``spread_rows_of``
    the level offsets; 0: none) the coarse rows whose gradient is spread over copies. Raises ValueError for positions that
    require a gradient: the fused ops give them none."""
    if x01.dtype != torch.float32 or table.dtype != torch.float32 or scales.dtype != torch.float32:
        raise ValueError(f"the fused hash-grid encoding takes float32 positions, table and scales, not {x01.dtype}, "
                         f"{table.dtype} and {scales.dtype}")
    if x01.requires_grad:
        raise ValueError("the fused hash-grid encoding gives positions no gradient; d features / d positions by "
                         "autograd (field.normals 'autograd') needs field.encoding 'torch' or 'auto'")
    if with_gradient:
        return _features_and_gradient(x01, table, scales, layout, spread_rows)
    return _features(x01, table, scales, layout, spread_rows)


def fused_density(points: torch.Tensor, table: torch.Tensor, scales: torch.Tensor, layout: torch.Tensor,
                  hidden_weight: torch.Tensor, out_weight: torch.Tensor, radius: float, blob_density: float,
                  blob_radius: float, half: bool) -> torch.Tensor:
    """The field's density [N] at world points [N, 3], without gradients, in one kernel: the unit cube, the hash
    grid (as ``fused_encode``), the density MLP with one hidden layer (weights [W, L*F] and [1, W]; ``half``: as
    under float16 autocast) and the blob's softplus, as ``RadianceField.density`` computes them in torch. Nothing
    between them is written to memory (the encoding alone writes 32 float32 features a point)."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (points, table, hidden_weight, out_weight)):
        raise ValueError("the fused density gives no gradients; call it under torch.no_grad()")
    return _density(points.float(), table, scales, layout, hidden_weight.float(), out_weight.float(), radius,
                    blob_density, blob_radius, half)
