"""Triton kernels of the fused hash-grid encoding (backend.nerf.hash_grid_triton wraps them as torch ops).

Imported only when the fused path first runs (importing triton takes about a second): whether a kernel is compiled
for the GPU or run by Triton's CPU interpreter is decided here, at import, by ``TRITON_INTERPRET=1``.

One program handles a block of points at **every level**: its features [block, L, F] (and gradient rows) are one
tile, stored as whole output rows. (Programs of one level each, storing F floats of every row at a time, took 4.8x
as long with gradient rows on a formed object's 1.4 M samples: bench/hash_grid.py --variants --shell, H200,
2026-12-03.) The indexing is the torch ``HashGrid``'s exactly: position ``x * scale + 0.5`` (float32, multiply then
add: no fused multiply-add, so cell boundaries fall where they fall in torch), the 8 corners of its cell, dense
levels indexed ``x + y * side + z * side^2``, hashed ones by tcnn's spatial hash ``x * 1 ^ y * 2654435761 ^ z *
805459861`` in uint32 (the low bits that the power-of-two mask keeps equal the torch path's int64 ones), plus the
level's offset.

The table gradient is summed with float32 atomic adds. A formed object's samples share the coarse levels' few
corners, so those adds contend: the adds to the first ``spread_rows`` rows (the coarse levels) go to one of
``SPREAD`` copies (the program's id modulo SPREAD; copy 0 is the table gradient itself), summed after the kernel
(2.2x less time for that kernel on the same samples). Before adding, runs of consecutive points in one cell of a
level (a ray's samples, at the coarse levels) are summed in registers (a segmented scan over the program's points,
``MERGE_RUNS``) and only each run's last point adds: in the ``reference`` preset's 256² step the kernel went from
3.07 to 2.24 ms (bench/results/generate_h200_2026-12-03_reference600_s12_*.json, ``kernels_by_region``). Adding a
row's two features with one vector instruction (sm_90's ``red.global.add.v2.f32``) was tried and gained nothing:
the adds' contention, not their count, costs the time.

The density kernel (``density``) runs the field's density without gradients in one pass: the encoding's features
stay in registers and go through the density MLP (a Triton matrix product) and the blob's softplus; only the
density is stored.

Memory layout: positions [N, 3], table [rows, F], features [N, L*F] (level l at columns l*F..l*F+F-1), gradient
rows [N, 3, L*F] (d features / d x, d y, d z), all float32 and contiguous; the table gradient is float32 too (its
summation order, not its value, varies from run to run).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Points a program (the interpreter: whole tests in a few programs) and warps, the fastest of those timed
# (bench/hash_grid.py --variants --shell, H200): the encoding 16 points x 2 warps, the table gradient 32 x 4.
ENCODE_BLOCK, ENCODE_WARPS = (1024 if triton.knobs.runtime.interpret else 16), 2
GRADIENT_BLOCK, GRADIENT_WARPS = (1024 if triton.knobs.runtime.interpret else 32), 4
SPREAD = 16  # copies of the coarse levels' table gradient
MERGE_RUNS = True  # the table gradient sums runs of consecutive points in one cell before adding

# enable_fp_fusion False: x * scale + 0.5 rounded twice, as torch does (bench/hash_grid.py --compile-check checks
# the PTX); the interpreter accepts and ignores it.
NO_FMA = {"enable_fp_fusion": False}


@triton.jit
def _corner_row(bx, by, bz, cx: tl.constexpr, cy: tl.constexpr, cz: tl.constexpr, side, mask, offset):
    """Table row (int64) of the cell corner (bx+cx, by+cy, bz+cz)."""
    vx = (bx + cx).to(tl.uint32)
    vy = (by + cy).to(tl.uint32)
    vz = (bz + cz).to(tl.uint32)
    side32 = side.to(tl.uint32)
    dense = vx + vy * side32 + vz * (side32 * side32)
    hashed = (vx * tl.full([], 1, tl.uint32)) ^ (vy * tl.full([], 2654435761, tl.uint32)) \
        ^ (vz * tl.full([], 805459861, tl.uint32))
    hashed = hashed & mask.to(tl.uint32)
    index = tl.where(side > 0, dense, hashed)
    return offset + index.to(tl.int64)


@triton.jit
def _axis_weights(fx, fy, fz, cx: tl.constexpr, cy: tl.constexpr, cz: tl.constexpr):
    """The corner's trilinear factors along x, y, z and their derivative signs."""
    if cx == 1:
        wx = fx
    else:
        wx = 1.0 - fx
    if cy == 1:
        wy = fy
    else:
        wy = 1.0 - fy
    if cz == 1:
        wz = fz
    else:
        wz = 1.0 - fz
    return wx, wy, wz


@triton.jit
def _weight_gradients(wx, wy, wz, scale, cx: tl.constexpr, cy: tl.constexpr, cz: tl.constexpr):
    """d weight / d x, y, z = (+1 or -1) * the other two axes' factors * scale (the torch path's ``others``)."""
    gx = wy * wz * scale
    gy = wx * wz * scale
    gz = wx * wy * scale
    if cx == 0:
        gx = -gx
    if cy == 0:
        gy = -gy
    if cz == 0:
        gz = -gz
    return gx, gy, gz


@triton.jit
def _block(x_ptr, scales_ptr, layout_ptr, n_points, LEVELS: tl.constexpr, LEVELS_P2: tl.constexpr,
           FEATURES: tl.constexpr, FEATURES_P2: tl.constexpr, BLOCK_POINTS: tl.constexpr):
    """What both kernels start with: this program's points, the feature columns, the live [points, levels,
    features] mask, and at every level ([points, levels]) the cell origins (int32), the fractions along x, y, z,
    and ([1, levels]) the level's scale and layout (table offset, dense side or 0, hash mask)."""
    points, live, x, y, z = _points(x_ptr, n_points, BLOCK_POINTS)
    feature, levels, live_mask, bx, by, bz, fx, fy, fz, scale, offset, side, mask = _cells(
        x, y, z, live, scales_ptr, layout_ptr, LEVELS, LEVELS_P2, FEATURES, FEATURES_P2)
    return points, feature, levels, live_mask, bx, by, bz, fx, fy, fz, scale, offset, side, mask


@triton.jit
def _points(x_ptr, n_points, BLOCK_POINTS: tl.constexpr):
    """This program's point indices, which of them are real, and their x, y, z (rows of 3 float32 at ``x_ptr``)."""
    points = tl.program_id(0) * BLOCK_POINTS + tl.arange(0, BLOCK_POINTS)
    live = points < n_points
    x, y, z = _positions(x_ptr, points, live)
    return points, live, x, y, z


@triton.jit
def _positions(x_ptr, points, live):
    """x, y, z of the points ``points`` (rows of 3 float32 at ``x_ptr``; 0 where not ``live``)."""
    rows = points.to(tl.int64) * 3
    x = tl.load(x_ptr + rows, mask=live, other=0.0)
    y = tl.load(x_ptr + rows + 1, mask=live, other=0.0)
    z = tl.load(x_ptr + rows + 2, mask=live, other=0.0)
    return x, y, z


@triton.jit
def _same_cell(x_ptr, points, n_points, bx, by, bz, scales_ptr, layout_ptr, LEVELS: tl.constexpr,
               LEVELS_P2: tl.constexpr, FEATURES: tl.constexpr, FEATURES_P2: tl.constexpr):
    """[points, levels]: whether point ``points`` (a real one) lies in the cell (bx, by, bz) at each level."""
    live = (points >= 0) & (points < n_points)
    x, y, z = _positions(x_ptr, points, live)
    _, _, _, cx, cy, cz, _, _, _, _, _, _, _ = _cells(x, y, z, live, scales_ptr, layout_ptr, LEVELS, LEVELS_P2,
                                                      FEATURES, FEATURES_P2)
    return live[:, None] & (cx == bx) & (cy == by) & (cz == bz)


@triton.jit
def _run_sum(value, starts, later_value, later_starts):
    """Sums within runs (a segmented scan's step): ``later`` restarts the sum where it starts a run."""
    return tl.where(later_starts != 0, later_value, value + later_value), starts | later_starts


@triton.jit
def _cells(x, y, z, live, scales_ptr, layout_ptr, LEVELS: tl.constexpr, LEVELS_P2: tl.constexpr,
           FEATURES: tl.constexpr, FEATURES_P2: tl.constexpr):
    """``_block``'s work after loading the positions x, y, z [points] in the unit cube (``live``: the real ones)."""
    levels = tl.arange(0, LEVELS_P2)
    level_live = levels < LEVELS
    feature = tl.arange(0, FEATURES_P2)
    live_mask = live[:, None, None] & level_live[None, :, None] & (feature < FEATURES)[None, None, :]
    scale = tl.load(scales_ptr + levels, mask=level_live, other=0.0)[None, :]
    offset = tl.load(layout_ptr + levels * 3, mask=level_live, other=0)[None, :]
    side = tl.load(layout_ptr + levels * 3 + 1, mask=level_live, other=0)[None, :]
    mask = tl.load(layout_ptr + levels * 3 + 2, mask=level_live, other=0)[None, :]
    # Memory safety: NaN -> 0 and the unit cube's clamp (the field clamps before encoding; the torch reference would
    # index outside a dense level's table for points outside it).
    x = tl.minimum(tl.maximum(tl.where(x == x, x, 0.0), 0.0), 1.0)[:, None]
    y = tl.minimum(tl.maximum(tl.where(y == y, y, 0.0), 0.0), 1.0)[:, None]
    z = tl.minimum(tl.maximum(tl.where(z == z, z, 0.0), 0.0), 1.0)[:, None]
    px = x * scale + 0.5
    py = y * scale + 0.5
    pz = z * scale + 0.5
    bx = tl.floor(px)
    by = tl.floor(py)
    bz = tl.floor(pz)
    return (feature, levels, live_mask, bx.to(tl.int32), by.to(tl.int32), bz.to(tl.int32), px - bx, py - by,
            pz - bz, scale, offset, side, mask)


@triton.jit
def _encode_kernel(x_ptr, table_ptr, scales_ptr, layout_ptr, features_ptr, gradient_ptr, n_points,
                   LEVELS: tl.constexpr, LEVELS_P2: tl.constexpr, FEATURES: tl.constexpr, FEATURES_P2: tl.constexpr,
                   WITH_GRADIENT: tl.constexpr, BLOCK_POINTS: tl.constexpr):
    points, feature, levels, live_mask, bx, by, bz, fx, fy, fz, scale, offset, side, mask = _block(
        x_ptr, scales_ptr, layout_ptr, n_points, LEVELS, LEVELS_P2, FEATURES, FEATURES_P2, BLOCK_POINTS)
    acc = tl.zeros((BLOCK_POINTS, LEVELS_P2, FEATURES_P2), dtype=tl.float32)
    grad_x = tl.zeros((BLOCK_POINTS, LEVELS_P2, FEATURES_P2), dtype=tl.float32)
    grad_y = tl.zeros((BLOCK_POINTS, LEVELS_P2, FEATURES_P2), dtype=tl.float32)
    grad_z = tl.zeros((BLOCK_POINTS, LEVELS_P2, FEATURES_P2), dtype=tl.float32)
    for corner in tl.static_range(8):  # corner bits: x, y, z offsets 0/1 (compile-time constants)
        row = _corner_row(bx, by, bz, corner & 1, (corner >> 1) & 1, (corner >> 2) & 1, side, mask, offset)
        values = tl.load(table_ptr + row[:, :, None] * FEATURES + feature[None, None, :], mask=live_mask,
                         other=0.0)
        wx, wy, wz = _axis_weights(fx, fy, fz, corner & 1, (corner >> 1) & 1, (corner >> 2) & 1)
        acc += (wx * wy * wz)[:, :, None] * values
        if WITH_GRADIENT:
            gx, gy, gz = _weight_gradients(wx, wy, wz, scale, corner & 1, (corner >> 1) & 1, (corner >> 2) & 1)
            grad_x += gx[:, :, None] * values
            grad_y += gy[:, :, None] * values
            grad_z += gz[:, :, None] * values
    width = LEVELS * FEATURES
    column = levels[None, :, None] * FEATURES + feature[None, None, :]
    out_rows = points.to(tl.int64)[:, None, None]
    tl.store(features_ptr + out_rows * width + column, acc, mask=live_mask)
    if WITH_GRADIENT:
        base = gradient_ptr + out_rows * (3 * width) + column
        tl.store(base, grad_x, mask=live_mask)
        tl.store(base + width, grad_y, mask=live_mask)
        tl.store(base + 2 * width, grad_z, mask=live_mask)


@triton.jit
def _table_gradient_kernel(x_ptr, scales_ptr, layout_ptr, grad_features_ptr, grad_gradient_ptr, table_grad_ptr,
                           copies_ptr, n_points, spread_rows, LEVELS: tl.constexpr, LEVELS_P2: tl.constexpr,
                           FEATURES: tl.constexpr, FEATURES_P2: tl.constexpr, HAS_GRAD_FEATURES: tl.constexpr,
                           HAS_GRAD_GRADIENT: tl.constexpr, SPREAD_COPIES: tl.constexpr,
                           MERGE_RUNS: tl.constexpr, BLOCK_POINTS: tl.constexpr):
    points, feature, levels, live_mask, bx, by, bz, fx, fy, fz, scale, offset, side, mask = _block(
        x_ptr, scales_ptr, layout_ptr, n_points, LEVELS, LEVELS_P2, FEATURES, FEATURES_P2, BLOCK_POINTS)
    width = LEVELS * FEATURES
    column = levels[None, :, None] * FEATURES + feature[None, None, :]
    in_rows = points.to(tl.int64)[:, None, None]
    grad_features = tl.zeros((BLOCK_POINTS, LEVELS_P2, FEATURES_P2), dtype=tl.float32)
    if HAS_GRAD_FEATURES:
        grad_features = tl.load(grad_features_ptr + in_rows * width + column, mask=live_mask, other=0.0)
    grad_x = tl.zeros((BLOCK_POINTS, LEVELS_P2, FEATURES_P2), dtype=tl.float32)
    grad_y = tl.zeros((BLOCK_POINTS, LEVELS_P2, FEATURES_P2), dtype=tl.float32)
    grad_z = tl.zeros((BLOCK_POINTS, LEVELS_P2, FEATURES_P2), dtype=tl.float32)
    if HAS_GRAD_GRADIENT:
        base = grad_gradient_ptr + in_rows * (3 * width) + column
        grad_x = tl.load(base, mask=live_mask, other=0.0)
        grad_y = tl.load(base + width, mask=live_mask, other=0.0)
        grad_z = tl.load(base + 2 * width, mask=live_mask, other=0.0)
    copy = tl.program_id(0) % SPREAD_COPIES  # 0: the table gradient itself; k > 0: copy k of the coarse rows
    add_mask = live_mask
    if MERGE_RUNS:
        # Consecutive points in the same cell of a level (a ray's samples, at the coarse levels) add to the same 8
        # rows: their contributions are summed first (a segmented scan over the program's points) and only each
        # run's last point adds the run's sum.
        index = tl.arange(0, BLOCK_POINTS)[:, None]
        starts = ~_same_cell(x_ptr, points - 1, n_points, bx, by, bz, scales_ptr, layout_ptr, LEVELS, LEVELS_P2,
                             FEATURES, FEATURES_P2) | (index == 0)
        ends = ~_same_cell(x_ptr, points + 1, n_points, bx, by, bz, scales_ptr, layout_ptr, LEVELS, LEVELS_P2,
                           FEATURES, FEATURES_P2) | (index == BLOCK_POINTS - 1)
        run_starts = tl.broadcast_to(starts.to(tl.int32)[:, :, None], (BLOCK_POINTS, LEVELS_P2, FEATURES_P2))
        add_mask = live_mask & ends[:, :, None]
    for corner in tl.static_range(8):
        row = _corner_row(bx, by, bz, corner & 1, (corner >> 1) & 1, (corner >> 2) & 1, side, mask, offset)
        wx, wy, wz = _axis_weights(fx, fy, fz, corner & 1, (corner >> 1) & 1, (corner >> 2) & 1)
        contribution = (wx * wy * wz)[:, :, None] * grad_features
        if HAS_GRAD_GRADIENT:
            gx, gy, gz = _weight_gradients(wx, wy, wz, scale, corner & 1, (corner >> 1) & 1, (corner >> 2) & 1)
            contribution += gx[:, :, None] * grad_x + gy[:, :, None] * grad_y + gz[:, :, None] * grad_z
        target = table_grad_ptr + row[:, :, None] * FEATURES + feature[None, None, :]
        if SPREAD_COPIES > 1:
            spread = (row < spread_rows) & (copy > 0)
            copied = copies_ptr + ((copy - 1) * spread_rows + row)[:, :, None] * FEATURES + feature[None, None, :]
            target = tl.where(spread[:, :, None], copied, target)
        if MERGE_RUNS:
            contribution, _ = tl.associative_scan((contribution, run_starts), 0, _run_sum)
        tl.atomic_add(target, contribution, mask=add_mask, sem="relaxed")


@triton.jit
def _density_kernel(points_ptr, table_ptr, scales_ptr, layout_ptr, hidden_weight_ptr, out_weight_ptr, density_ptr,
                    n_points, radius, blob_density, blob_radius, LEVELS: tl.constexpr, LEVELS_P2: tl.constexpr,
                    FEATURES: tl.constexpr, FEATURES_P2: tl.constexpr, WIDTH: tl.constexpr, HALF: tl.constexpr,
                    BLOCK_POINTS: tl.constexpr):
    """The field's density at world points [N, 3] in one pass (``RadianceField.density`` without gradients): the
    unit cube's position (p / radius + 1) * 0.5, the features at every level, the bias-free MLP features -> WIDTH
    -> ReLU -> 1 (``HALF``: float16 operands, each layer's output rounded to float16, sums in float32, as under
    float16 autocast; else float32 throughout), and softplus(raw + blob_density * (1 - |p| / blob_radius)). Only
    the density [N] is written: no features, no hidden layer in memory."""
    points, live, px, py, pz = _points(points_ptr, n_points, BLOCK_POINTS)
    radii = tl.zeros((BLOCK_POINTS,), dtype=tl.float32) + radius
    # as the torch field rounds it: a correctly rounded division, then + 1, then * 0.5 (no fused multiply-add)
    feature, levels, live_mask, bx, by, bz, fx, fy, fz, scale, offset, side, mask = _cells(
        (tl.math.div_rn(px, radii) + 1.0) * 0.5, (tl.math.div_rn(py, radii) + 1.0) * 0.5,
        (tl.math.div_rn(pz, radii) + 1.0) * 0.5, live, scales_ptr, layout_ptr, LEVELS, LEVELS_P2, FEATURES,
        FEATURES_P2)
    features = tl.zeros((BLOCK_POINTS, LEVELS_P2, FEATURES_P2), dtype=tl.float32)
    for corner in tl.static_range(8):
        row = _corner_row(bx, by, bz, corner & 1, (corner >> 1) & 1, (corner >> 2) & 1, side, mask, offset)
        values = tl.load(table_ptr + row[:, :, None] * FEATURES + feature[None, None, :], mask=live_mask,
                         other=0.0)
        wx, wy, wz = _axis_weights(fx, fy, fz, corner & 1, (corner >> 1) & 1, (corner >> 2) & 1)
        features += (wx * wy * wz)[:, :, None] * values
    inputs = tl.reshape(features, (BLOCK_POINTS, LEVELS_P2 * FEATURES_P2))
    # the hidden layer's weight [WIDTH, LEVELS * FEATURES], read transposed at the tile's (level, feature) columns
    column = tl.arange(0, LEVELS_P2 * FEATURES_P2)
    level, feature_of = column // FEATURES_P2, column % FEATURES_P2
    used = (level < LEVELS) & (feature_of < FEATURES)
    unit = tl.arange(0, WIDTH)
    hidden_weight = tl.load(hidden_weight_ptr + unit[None, :] * (LEVELS * FEATURES)
                            + (level * FEATURES + feature_of)[:, None], mask=used[:, None], other=0.0)
    out_weight = tl.load(out_weight_ptr + unit)
    if HALF:
        hidden = tl.dot(inputs.to(tl.float16), hidden_weight.to(tl.float16), out_dtype=tl.float32)
        hidden = tl.maximum(hidden.to(tl.float16).to(tl.float32), 0.0)
        raw = tl.sum(hidden * out_weight.to(tl.float16).to(tl.float32)[None, :], axis=1)
        raw = raw.to(tl.float16).to(tl.float32)
    else:
        hidden = tl.maximum(tl.dot(inputs, hidden_weight, input_precision="ieee", out_dtype=tl.float32), 0.0)
        raw = tl.sum(hidden * out_weight[None, :], axis=1)
    distance = tl.sqrt(px * px + py * py + pz * pz)
    x = raw + blob_density * (1.0 - tl.math.div_rn(distance, tl.zeros_like(distance) + blob_radius))
    # softplus as torch's (beta 1, threshold 20: x itself above it), below it log(1 + e^x) written stably
    soft = tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))
    tl.store(density_ptr + points, tl.where(x > 20.0, x, soft), mask=live)


def _shape(scales: torch.Tensor, table_features: int) -> dict:
    levels = scales.shape[0]
    return {"LEVELS": levels, "LEVELS_P2": triton.next_power_of_2(levels), "FEATURES": table_features,
            "FEATURES_P2": triton.next_power_of_2(table_features)}


def encode(x01: torch.Tensor, table: torch.Tensor, scales: torch.Tensor, layout: torch.Tensor,
           with_gradient: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features [N, L*F] and, with ``with_gradient``, gradient rows [N, 3, L*F] (contiguous float32 inputs)."""
    n_points, levels, features = x01.shape[0], scales.shape[0], table.shape[1]
    out = torch.empty(n_points, levels * features, device=x01.device, dtype=torch.float32)
    gradient = torch.empty(n_points, 3, levels * features, device=x01.device, dtype=torch.float32) \
        if with_gradient else None
    if n_points:
        _encode_kernel[(triton.cdiv(n_points, ENCODE_BLOCK),)](
            x01, table, scales, layout, out, gradient if with_gradient else out, n_points,
            WITH_GRADIENT=with_gradient, BLOCK_POINTS=ENCODE_BLOCK, num_warps=ENCODE_WARPS, **_shape(scales, features),
            **NO_FMA)
    return out, gradient


DENSITY_BLOCK, DENSITY_WARPS = (1024 if triton.knobs.runtime.interpret else 16), 2  # as the encoding's


def density(points: torch.Tensor, table: torch.Tensor, scales: torch.Tensor, layout: torch.Tensor,
            hidden_weight: torch.Tensor, out_weight: torch.Tensor, radius: float, blob_density: float,
            blob_radius: float, half: bool) -> torch.Tensor:
    """Density [N] (float32) at world points [N, 3] (contiguous float32; the MLP's weights [W, L*F] and [1, W]
    float32)."""
    n_points, features = points.shape[0], table.shape[1]
    out = torch.empty(n_points, device=points.device, dtype=torch.float32)
    if n_points:
        _density_kernel[(triton.cdiv(n_points, DENSITY_BLOCK),)](
            points, table, scales, layout, hidden_weight, out_weight, out, n_points, float(radius),
            float(blob_density), float(blob_radius), WIDTH=hidden_weight.shape[0], HALF=half,
            BLOCK_POINTS=DENSITY_BLOCK, num_warps=DENSITY_WARPS, **_shape(scales, features), **NO_FMA)
    return out


def table_gradient(x01: torch.Tensor, grad_features: torch.Tensor | None, grad_gradient: torch.Tensor | None,
                   scales: torch.Tensor, layout: torch.Tensor, table_rows: int, features: int,
                   spread_rows: int = 0, merge_runs: bool | None = None) -> torch.Tensor:
    """d loss / d table [rows, F] (float32) from the outputs' gradients (None: zero). The adds to rows below
    ``spread_rows`` (whole coarse levels; 0: none) are spread over ``SPREAD`` copies and summed here;
    ``merge_runs`` (None: ``MERGE_RUNS``): consecutive points in one cell add their summed contributions once."""
    merge_runs = MERGE_RUNS if merge_runs is None else merge_runs
    table_grad = torch.zeros(table_rows, features, device=x01.device, dtype=torch.float32)
    n_points = x01.shape[0]
    if not n_points or (grad_features is None and grad_gradient is None):
        return table_grad
    programs = triton.cdiv(n_points, GRADIENT_BLOCK)
    copies_count = SPREAD if spread_rows > 0 and programs >= SPREAD else 1  # (one kernel variant for both cases)
    copies = torch.zeros(copies_count - 1, spread_rows, features, device=x01.device, dtype=torch.float32) \
        if copies_count > 1 else table_grad
    _table_gradient_kernel[(programs,)](
        x01, scales, layout, grad_features if grad_features is not None else table_grad,
        grad_gradient if grad_gradient is not None else table_grad, table_grad, copies, n_points, spread_rows,
        HAS_GRAD_FEATURES=grad_features is not None, HAS_GRAD_GRADIENT=grad_gradient is not None,
        SPREAD_COPIES=copies_count, MERGE_RUNS=merge_runs, BLOCK_POINTS=GRADIENT_BLOCK, num_warps=GRADIENT_WARPS,
        **_shape(scales, features), **NO_FMA)
    if copies_count > 1:
        table_grad[:spread_rows] += copies.sum(dim=0)
    return table_grad
