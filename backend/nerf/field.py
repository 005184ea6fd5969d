"""The radiance field: a multiresolution hash grid (torch; fused Triton kernels on CUDA, backend.nerf.hash_grid_triton)
with small density and albedo MLPs.

Points are world coordinates (Blender Z-up) inside [-radius, radius]^3. Density is in 1/world-unit:
``softplus(raw + blob_density * (1 - |x| / blob_radius))`` (threestudio's ``blob_magic3d`` bias); albedo is
``sigmoid`` of three features, in [0, 1]. Normals point outward (along -grad density), unit length.

Normals (``FieldConfig.normals``):
- ``analytic``: -grad density written out as forward operations: the hash grid's trilinear weights differentiated
  with the same 8 gathered corners per level, and through the bias-free ReLU MLP in reverse mode
  (``raw_density_gradient``: d raw / d features once, then its dot product with each axis's feature derivative;
  until 2026-12-04 three forward-mode tangents through the MLP, the same gradient with three times the rows,
  slower in a whole run: bench/RESULTS.md, 2026-12-04, session 14). The value is the exact
  gradient, computed in one pass (no extra field queries, no double backward), and training backpropagates
  through it with first-order autograd only.
- ``autograd``: the same gradient by ``torch.autograd.grad(create_graph=True)`` on the plain-torch field (the
  reference's way; a double backward, slow): the reference the analytic path is tested equal to.
- ``finite_difference``: central differences, six more density queries per point.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from backend.errors import SettingsError
from backend.nerf import hash_grid_triton
from backend.nerf.presets import FieldConfig

_PRIMES = (1, 2654435761, 805459861)  # tcnn's spatial hash primes
# The 8 corners of a cell as 0/1 offsets [8, 3].
_CORNERS = torch.tensor([[(i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=torch.int64)


class HashGrid(nn.Module):
    """Multiresolution hash encoding (Instant-NGP / tcnn ``HashGrid``): [N, 3] in [0, 1] -> [N, levels*features].

    Level l scales the unit cube by ``s_l = base * per_level_scale**l - 1`` (tcnn's ``scale``) and offsets it by
    half a cell: a point x lands at ``x * s_l + 0.5``, so the level's lattice has ``ceil(s_l) + 2`` vertices a side.
    Levels whose lattice (that many vertices cubed) fits in the table are indexed densely, the others through tcnn's
    spatial hash. Trilinear interpolation between the 8 corners.

    ``encoding`` (``FieldConfig.encoding``): ``torch`` runs the per-level torch code below (the reference),
    ``triton`` the fused kernels (backend.nerf.hash_grid_triton: equal within float32 summation order, no gradient
    for the positions), ``auto`` the fused kernels where they can run (CUDA, triton installed, float32 positions
    that need no gradient) and the torch code elsewhere.
    """

    def __init__(self, levels, features_per_level, log2_hashmap_size, base_resolution, per_level_scale,
                 encoding: str = "torch"):
        super().__init__()
        self.implementation = encoding
        self.levels = levels
        self.features_per_level = features_per_level
        table_size = 2**log2_hashmap_size
        self.scales: list[float] = []
        self.sides: list[int] = []  # vertices a side for dense levels, 0 for hashed ones
        sizes = []
        for level in range(levels):
            scale = base_resolution * per_level_scale**level - 1.0
            side = math.ceil(scale) + 2  # positions x*scale + 0.5 reach corners 0 .. ceil(scale)+1
            dense = side**3 <= table_size
            size = side**3 if dense else table_size
            size = (size + 7) // 8 * 8
            self.scales.append(scale)
            self.sides.append(side if dense else 0)
            sizes.append(size)
        self.sizes = sizes
        self.offsets = [sum(sizes[:level]) for level in range(levels)]
        self.table = nn.Parameter(torch.empty(sum(sizes), features_per_level).uniform_(-1e-4, 1e-4))
        # The levels as the fused kernels read them (not saved: derived from the settings). The scales are the
        # float32 values the torch path's ``x01 * scale`` multiplies by.
        self.register_buffer("level_scales", torch.tensor(self.scales, dtype=torch.float32), persistent=False)
        layout = [(offset, side, size - 1) for offset, side, size in zip(self.offsets, self.sides, sizes)]
        self.register_buffer("level_layout", torch.tensor(layout, dtype=torch.int64), persistent=False)
        self.spread_rows = hash_grid_triton.spread_rows_of(self.offsets)  # the fused table gradient's coarse rows

    @property
    def output_dim(self) -> int:
        return self.levels * self.features_per_level

    def check_device(self, device: torch.device) -> None:
        """SettingsError at the start of a run where ``triton`` is forced but cannot run on ``device``."""
        reason = hash_grid_triton.unavailable_reason(torch.device(device))
        if self.implementation == "triton" and reason is not None:
            raise SettingsError(f"setting 'field.encoding' is 'triton' but {reason}; use 'auto' or 'torch'")

    def uses_fused(self, x01: torch.Tensor) -> bool:
        """Whether ``forward(x01)`` runs the fused kernels; SettingsError where ``triton`` is forced but cannot."""
        if self.implementation == "torch":
            return False
        if self.implementation == "auto" and x01.device.type != "cuda":
            return False  # Triton's CPU interpreter (TRITON_INTERPRET=1) only where 'triton' is asked for: tests
        reason = hash_grid_triton.unavailable_reason(x01.device)
        if reason is None and (x01.dtype, self.table.dtype) != (torch.float32, torch.float32):
            reason = f"the fused hash-grid encoding takes float32 positions and table, not {x01.dtype}"
        if reason is None and x01.requires_grad:
            reason = "the fused hash-grid encoding gives positions no gradient (autograd normals need it)"
        if reason is not None and self.implementation == "triton":
            raise SettingsError(f"setting 'field.encoding' is 'triton' but {reason}; use 'auto' or 'torch'")
        return reason is None

    def forward(self, x01: torch.Tensor, with_gradient: bool = False):
        """Features [N, levels*features]; with ``with_gradient`` also their derivative d features / d x01
        [N, 3, levels*features] (one row per axis), from the same corner values."""
        if self.uses_fused(x01):
            return hash_grid_triton.fused_encode(x01, self.table, self.level_scales, self.level_layout,
                                                 with_gradient, self.spread_rows)
        corners = _CORNERS.to(x01.device)
        features, gradients = [], []
        for level in range(self.levels):
            position = x01 * self.scales[level] + 0.5
            base = position.floor()
            frac = position - base  # [N, 3]
            vertex = base.long()[:, None, :] + corners  # [N, 8, 3]
            side = self.sides[level]
            if side:
                index = vertex[..., 0] + vertex[..., 1] * side + vertex[..., 2] * (side * side)
            else:  # table sizes of hashed levels are powers of two
                index = (vertex[..., 0] * _PRIMES[0]) ^ (vertex[..., 1] * _PRIMES[1]) ^ (vertex[..., 2] * _PRIMES[2])
                index = index & (self.sizes[level] - 1)
            index = index + self.offsets[level]
            axis_weight = torch.where(corners.bool(), frac[:, None, :], 1.0 - frac[:, None, :])  # [N, 8, 3]
            weight = axis_weight.prod(dim=-1)  # [N, 8]
            values = self.table.index_select(0, index.reshape(-1)).reshape(-1, 8, self.features_per_level)
            features.append((values * weight[..., None]).sum(dim=1))
            if with_gradient:
                # d weight / d frac_k = (+1 or -1) * the product of the other two axes' weights; frac = x01*scale+c
                w0, w1, w2 = axis_weight.unbind(dim=-1)
                others = torch.stack([w1 * w2, w0 * w2, w0 * w1], dim=-1)  # [N, 8, 3]
                sign = corners.to(x01.dtype) * 2.0 - 1.0
                weight_gradient = others * sign * self.scales[level]
                # broadcast-and-sum, not einsum: einsum becomes N tiny batched matmuls on a GPU
                gradients.append((values[:, :, None, :] * weight_gradient[..., None]).sum(dim=1))  # [N, 3, F]
        if with_gradient:
            return torch.cat(features, dim=-1), torch.cat(gradients, dim=-1)
        return torch.cat(features, dim=-1)


def compiled_over_samples(function, **compile_options):
    """``function(points [N, 3], ...)`` compiled for any sample count N, every other size fixed.

    Only N is marked dynamic (``maybe_mark_dynamic``: a count of 1 may still get its own graph). Until 2026-12-03
    (session 10) the field was compiled with ``dynamic=True``, which makes every size symbolic: the density's graph
    (the density filter's, without normals) traced the points as [N, s] rather than [N, 3] (checked on the CPU with
    the fused encoding in Triton's interpreter), so the blob's norm over the coordinates was a looped reduction
    kernel, not an unrolled sum of 3 squares; on the H200 that kernel
    (``triton_red_fused_add_clamp_hash_grid_features_linalg_vector_norm_mul_0``) took ~0.9 ms a call, 2.0 ms of the
    reference's 256² step (bench/results/generate_h200_2026-12-03_reference600_s10.json)."""
    compiled = torch.compile(function, **compile_options)

    def call(points: torch.Tensor, *args):
        torch._dynamo.maybe_mark_dynamic(points, 0)
        return compiled(points, *args)

    return call


def _linear(layer: nn.Linear, inputs: torch.Tensor) -> torch.Tensor:
    """The MLPs' one linear map, the layer as it is: padding the 1- and 3-column output layers to 8 columns (tried
    2026-12-03) timed faster in the field's step alone but made the ``reference`` preset's 256² step slower in a
    whole run (p50 1.89x against 1.68x its floor on two machines, bench/RESULTS.md, 2026-12-04).
    bench/output_layers.py swaps other forms in here."""
    return layer(inputs)


# The MLPs' row count rounded up to a multiple of this, by device type (others: as it is). A generation's visible
# sample count is new at every step, and cuBLASLt (which torch picks on an H200) costs its host ~250 µs more for a
# product of a shape it has not seen (bench/matmul_host.py: 294 against 49 µs a call): with the rows zero-padded to
# a multiple of 8,192 the products see a few hundred shapes over a run, and the outputs are cut back (each row's
# outputs depend on that row alone: the same values). Whole ``reference`` runs, each beside the rows as they were
# in one process: the 256² step 25.64 against 25.98 ms (p50) on one H200 and 25.80 against 28.08 ms on another,
# chamfer unchanged (bench/RESULTS.md, 2026-12-04, session 15). On the CPU the padding would only add work.
MLP_ROW_BUCKET: dict[str, int] = {"cuda": 8192}


def bucketed_rows(inputs: torch.Tensor) -> torch.Tensor:
    """``inputs`` [N, I] zero-padded to a multiple of its device's ``MLP_ROW_BUCKET`` rows (or as it is)."""
    bucket = MLP_ROW_BUCKET.get(inputs.device.type, 1)
    if bucket <= 1:
        return inputs
    return F.pad(inputs, (0, 0, 0, (-inputs.shape[0]) % bucket))


def mlp_forward(network: nn.Sequential, inputs: torch.Tensor) -> torch.Tensor:
    """Outputs [N, O] of a bias-free ReLU MLP at inputs [N, I], each Linear through ``_linear`` (on rows bucketed as
    ``MLP_ROW_BUCKET`` says)."""
    rows = inputs.shape[0]
    inputs = bucketed_rows(inputs)
    for layer in network:
        if isinstance(layer, nn.Linear):
            inputs = _linear(layer, inputs)
        elif isinstance(layer, nn.ReLU):
            inputs = inputs * (inputs > 0)  # as mlp_forward_and_input_gradient masks (what the benchmarks measured)
        else:
            raise TypeError(f"no rule for {type(layer).__name__}")
    return inputs[:rows]


def mlp_forward_and_input_gradient(network: nn.Sequential, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs [N, 1], d outputs / d inputs [N, I]) of a bias-free ReLU MLP with one output, the gradient in
    reverse mode written out: the output layer's weight row, masked by each ReLU's derivative (0 where flat, as
    autograd takes it) and carried back through each Linear's weight: what autograd computes for the reference's
    normals, without the three [N, I] tangents per sample a forward-mode derivative would push through every
    layer (three times the rows in each matrix product). Rows bucketed as in ``mlp_forward``."""
    rows = inputs.shape[0]
    masks = []
    outputs = bucketed_rows(inputs)
    for layer in network:
        if isinstance(layer, nn.Linear):
            outputs = _linear(layer, outputs)
        elif isinstance(layer, nn.ReLU):
            active = outputs > 0
            masks.append(active)
            outputs = outputs * active
        else:
            raise TypeError(f"no gradient rule for {type(layer).__name__}")
    if outputs.shape[-1] != 1:
        raise ValueError(f"an input gradient needs one output, not {outputs.shape[-1]}")
    gradient = None
    for layer in reversed(network):
        if isinstance(layer, nn.Linear):
            weight = layer.weight.to(outputs.dtype)
            gradient = weight[0] if gradient is None else torch.matmul(gradient, weight)
        else:
            gradient = gradient * masks.pop()
    return outputs[:rows], gradient.expand(rows, -1) if gradient.dim() == 1 else gradient[:rows]


def raw_density_gradient(network: nn.Sequential, features: torch.Tensor, feature_gradient: torch.Tensor,
                         axis_factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw density [N, 1], d raw / d points [N, 3]) from the features [N, I], their derivative d features / d x01
    [N, 3, I] and d x01 / d points [N, 3] (0 outside the unit cube's clamp): d raw / d features [N, I] once
    (``mlp_forward_and_input_gradient``), then its dot product with each axis's feature derivative in float32 (one
    pass over the [N, 3, I] derivative, which the encoding gives in float32; the axis factor applied to the [N, 3]
    result).

    Against three forward-mode tangents through the MLP (the field's way until 2026-12-04), on one H200 in one
    process: the published field's forward with normals + backward 7.78 against 9.34 ms (1.4 M samples, float16
    MLPs, compiled), the ``reference`` preset's 256² step p50 32.61 against 34.96 ms, chamfer 0.00376 against
    0.00377 (bench/RESULTS.md, 2026-12-04, sessions 13 and 14)."""
    raw, input_gradient = mlp_forward_and_input_gradient(network, features)
    return raw, points_gradient(input_gradient, feature_gradient, axis_factor)


def points_gradient(input_gradient: torch.Tensor, feature_gradient: torch.Tensor,
                    axis_factor: torch.Tensor) -> torch.Tensor:
    """d raw / d points [N, 3] from d raw / d features [N, I], d features / d x01 [N, 3, I] and d x01 / d points
    [N, 3]: the dot product of each axis's feature derivative with the input gradient, in the derivative's float32."""
    gradient = (input_gradient.to(feature_gradient.dtype)[:, None, :] * feature_gradient).sum(dim=-1)
    return gradient * axis_factor


def mlp(in_dim: int, out_dim: int, width: int, hidden_layers: int) -> nn.Sequential:
    """ReLU MLP without biases: threestudio's ``VanillaMLP`` (bias-free Linear layers), which the reference's
    density and feature networks are (64 neurons, 1 hidden layer), not tcnn's FullyFusedMLP."""
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(hidden_layers):
        layers += [nn.Linear(dim, width, bias=False), nn.ReLU()]
        dim = width
    layers.append(nn.Linear(dim, out_dim, bias=False))
    return nn.Sequential(*layers)


class RadianceField(nn.Module):
    """Density, albedo and normals at world points; see the module docstring for units and conventions."""

    def __init__(self, config: FieldConfig):
        super().__init__()
        self.config = config
        self.radius = config.radius
        self.encoding = HashGrid(
            config.levels,
            config.features_per_level,
            config.log2_hashmap_size,
            config.base_resolution,
            config.per_level_scale,
            config.encoding,
        )
        self.density_mlp = mlp(self.encoding.output_dim, 1, config.mlp_width, config.mlp_hidden_layers)
        self.albedo_mlp = mlp(self.encoding.output_dim, 3, config.mlp_width, config.mlp_hidden_layers)
        self._compiled = None
        self._compiled_with_normals = None
        # The MLPs' autocast dtype (None: none). ``run_field`` sets float16 on CUDA under ``run.mixed_precision``,
        # the reference's ``16-mixed`` (its VanillaMLP ran under float16 autocast); outputs keep the points' dtype.
        self.mlp_autocast_dtype: torch.dtype | None = None

    def grid_parameters(self) -> list[nn.Parameter]:
        return list(self.encoding.parameters())

    def mlp_parameters(self) -> list[nn.Parameter]:
        return list(self.density_mlp.parameters()) + list(self.albedo_mlp.parameters())

    def use_compiled(self, enabled: bool = True, **compile_options) -> None:
        """Run the field through torch.compile (the plain-torch ``_evaluate`` stays the reference);
        ``compile_options`` go to torch.compile (tests: ``backend``)."""
        if enabled:
            from backend.compile_cache import use_compile_cache

            use_compile_cache()
        self._compiled = compiled_over_samples(self._evaluate, **compile_options) if enabled else None
        self._compiled_with_normals = compiled_over_samples(self._evaluate_with_normals, **compile_options) \
            if enabled else None

    @contextlib.contextmanager
    def eager(self):
        """Within: the plain-torch evaluation even where compiled (measurements that must not compile)."""
        saved = self._compiled, self._compiled_with_normals
        self._compiled = self._compiled_with_normals = None
        try:
            yield self
        finally:
            self._compiled, self._compiled_with_normals = saved

    def _unit_cube(self, points: torch.Tensor) -> torch.Tensor:
        """World points -> the hash grid's [0, 1]^3 (unclamped)."""
        return (points / self.radius + 1.0) * 0.5

    def _encode(self, points: torch.Tensor) -> torch.Tensor:
        return self.encoding(self._unit_cube(points).clamp(0.0, 1.0))

    def _blob(self, distance: torch.Tensor) -> torch.Tensor:
        """The density bias at ``distance`` = |x| from the centre."""
        return self.config.blob_density * (1.0 - distance / self.config.blob_radius)

    def _mlp_precision(self, points: torch.Tensor):
        """The MLPs' autocast (a no-op context without ``mlp_autocast_dtype``)."""
        dtype = self.mlp_autocast_dtype
        return torch.autocast(points.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def _density_from_features(self, points: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        with self._mlp_precision(points):
            raw = mlp_forward(self.density_mlp, features)[..., 0]
        return F.softplus(raw.to(points.dtype) + self._blob(points.norm(dim=-1)))

    def _albedo_from_features(self, points: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        with self._mlp_precision(points):
            raw = mlp_forward(self.albedo_mlp, features)
        return torch.sigmoid(raw.to(points.dtype))

    def _evaluate(self, points: torch.Tensor, with_albedo: bool = True):
        features = self._encode(points)
        density = self._density_from_features(points, features)
        albedo = self._albedo_from_features(points, features) if with_albedo else None
        return density, albedo

    def _evaluate_with_normals(self, points: torch.Tensor):
        """(density, albedo, normals) with the analytic gradient (see the module docstring)."""
        features, feature_gradient, axis_factor = self._encode_with_gradient(points)
        with self._mlp_precision(points):
            raw, raw_gradient = raw_density_gradient(self.density_mlp, features, feature_gradient, axis_factor)
        density, normals = self._density_and_normals(points, raw, raw_gradient)
        return density, self._albedo_from_features(points, features), normals

    def _encode_with_gradient(self, points: torch.Tensor):
        """(features [N, I], d features / d x01 [N, 3, I], d x01 / d points [N, 3]: 0 outside the unit cube's
        clamp) at world points [N, 3]."""
        scaled = self._unit_cube(points)
        inside = ((scaled >= 0.0) & (scaled <= 1.0)).to(points.dtype)  # the clamp's derivative
        features, feature_gradient = self.encoding(scaled.clamp(0.0, 1.0), with_gradient=True)  # d/d x01
        return features, feature_gradient, inside * (0.5 / self.radius)

    def _density_and_normals(self, points: torch.Tensor, raw: torch.Tensor, raw_gradient: torch.Tensor):
        """(density [N], unit normals [N, 3]) from the density MLP's raw output [N, 1] and its gradient
        d raw / d points [N, 3] (any float dtype; in the points' dtype from here on), with the blob's bias."""
        raw, raw_gradient = raw.to(points.dtype), raw_gradient.to(points.dtype)
        distance = points.norm(dim=-1)
        blob = self._blob(distance)
        blob_gradient = -self.config.blob_density / self.config.blob_radius * points / distance.clamp(min=1e-12)[:, None]
        density = F.softplus(raw[..., 0] + blob)
        # grad density = sigmoid(raw + blob) * (grad raw + grad blob); the positive factor drops out of the normal
        normals = F.normalize(-(raw_gradient + blob_gradient), dim=-1)
        return density, normals

    def _run(self, points: torch.Tensor, with_albedo: bool = True):
        if self._compiled is not None and points.shape[0] > 0:
            return self._compiled(points, with_albedo)
        return self._evaluate(points, with_albedo)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Density [N] at points [N, 3]. Without gradients, where the fused encoding runs and ``fused_density`` is
        on, in one kernel (``hash_grid_triton.fused_density``): the same values within float summation order."""
        if self.uses_fused_density(points):
            hidden, out = self.density_mlp[0].weight, self.density_mlp[2].weight
            return hash_grid_triton.fused_density(
                points, self.encoding.table, self.encoding.level_scales, self.encoding.level_layout, hidden, out,
                self.radius, self.config.blob_density, self.config.blob_radius,
                half=self.mlp_autocast_dtype == torch.float16)
        return self._run(points, with_albedo=False)[0]

    def uses_fused_density(self, points: torch.Tensor) -> bool:
        """Whether ``density(points)`` runs the fused kernel: no gradient wanted, the fused encoding runs on the
        points, one hidden layer of a power-of-two width >= 16 and at least 16 feature columns (Triton's matrix
        product), MLPs in float32 or float16."""
        if not self.config.fused_density or torch.is_grad_enabled() or points.requires_grad:
            return False
        width, columns = self.config.mlp_width, self.encoding.levels * self.encoding.features_per_level
        if (len(self.density_mlp) != 3 or width < 16 or width & (width - 1) or columns < 16
                or self.mlp_autocast_dtype not in (None, torch.float16)):
            return False
        return self.encoding.uses_fused(points)

    def forward(self, points: torch.Tensor, with_normals: bool = False):
        """(density [N], albedo [N, 3], normals [N, 3] or None) at points [N, 3]."""
        if not with_normals:
            density, albedo = self._run(points)
            return density, albedo, None
        if self.config.normals == "analytic":
            if self._compiled_with_normals is not None and points.shape[0] > 0:
                return self._compiled_with_normals(points)
            return self._evaluate_with_normals(points)
        if self.config.normals == "autograd":
            return self._forward_autograd_normals(points)
        return self._forward_finite_difference_normals(points)

    def _forward_finite_difference_normals(self, points: torch.Tensor):
        eps = self.config.finite_difference_eps
        offsets = torch.eye(3, device=points.device, dtype=points.dtype) * eps
        shifted = torch.cat([points[:, None, :] + offsets, points[:, None, :] - offsets], dim=1)  # [N, 6, 3]
        n = points.shape[0]
        density, albedo = self._run(points)
        around = self.density(shifted.reshape(-1, 3)).reshape(n, 6)
        gradient = (around[:, :3] - around[:, 3:]) / (2.0 * eps)
        return density, albedo, F.normalize(-gradient, dim=-1)

    def _forward_autograd_normals(self, points: torch.Tensor):
        training = torch.is_grad_enabled()  # the double backward is needed only when the loss will backpropagate
        with torch.enable_grad():
            points = points.detach().requires_grad_(True)
            # The double backward needs create_graph, which torch.compile's backward (donated buffers) refuses:
            # the analytic path runs the plain-torch field.
            density, albedo = self._evaluate(points)
            (gradient,) = torch.autograd.grad(density.sum(), points, create_graph=training)
        normals = F.normalize(-gradient, dim=-1)
        if not training:
            density, albedo, normals = density.detach(), albedo.detach(), normals.detach()
        return density, albedo, normals


def run_field(config: FieldConfig, device: torch.device | str, mixed_precision: bool) -> RadianceField:
    """A new field set up as a generation runs it: on CUDA its MLPs under float16 autocast with ``mixed_precision``
    (``run.mixed_precision``; bench/field_step.py: 28% off the field's step) and compiled with ``config.compile``;
    plain float32 torch elsewhere. Its initial weights draw from the global RNG."""
    device = torch.device(device)
    field = RadianceField(config).to(device)
    if device.type == "cuda" and mixed_precision:
        field.mlp_autocast_dtype = torch.float16
    if device.type == "cuda" and config.compile:
        field.use_compiled()
    return field
