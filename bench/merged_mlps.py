"""The field's density and albedo MLPs as fewer, wider matrix products: a variant for bench/variants.py
(``merged_mlps``), measured beside the field as it is in a whole run (issue 18).

Why: a ``reference`` 256² step waits ~6 ms on its host, and the host's costliest operator there is ``aten::mm``
(~150 µs a call, 15 a step: bench/RESULTS.md, 2026-12-04, session 14). The published field (one hidden layer of 64
in each MLP, bias-free, as threestudio's VanillaMLP) runs, forward with its analytic normals:

- the two hidden layers, [N, 32] -> [N, 64] each: here one product with the two weights stacked, [N, 32] ->
  [N, 128];
- the two output layers, 64 -> 1 and 64 -> 3: here one product with a block-diagonal [4, 128] weight (density's
  row over the first 64 columns, albedo's three over the last 64; the zero blocks add nothing);
- the normals' reverse-mode product, d raw / d features = (w_out * relu'(h)) @ W_hidden: as it is.

So 3 products forward instead of 5 and 6 backward instead of 10, with the same values: each output column is the
same dot product, and the parameters stay the two MLPs' own (autograd gives the zero blocks' gradient to no
parameter). The rows are bucketed as the field's own MLPs take them (``MLP_ROW_BUCKET``; session 15's whole run of
this variant, 26.66 against 25.98 ms, was beside the field before its rows were bucketed, and neither bucketed).
A field whose MLPs are not one hidden layer over the same features runs as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from backend.nerf.field import RadianceField, bucketed_rows, points_gradient

ORIGINAL = RadianceField._evaluate_with_normals


def _one_hidden_layer(network: nn.Sequential) -> bool:
    return (len(network) == 3 and isinstance(network[0], nn.Linear) and isinstance(network[1], nn.ReLU)
            and isinstance(network[2], nn.Linear) and network[0].bias is None and network[2].bias is None)


def mergeable(field: RadianceField) -> bool:
    density, albedo = field.density_mlp, field.albedo_mlp
    return (_one_hidden_layer(density) and _one_hidden_layer(albedo)
            and density[0].in_features == albedo[0].in_features and density[2].out_features == 1)


def evaluate_with_normals_merged(self: RadianceField, points: torch.Tensor):
    """``RadianceField._evaluate_with_normals`` with the MLPs merged as above: (density, albedo, normals)."""
    if not mergeable(self):
        return ORIGINAL(self, points)
    features, feature_gradient, axis_factor = self._encode_with_gradient(points)
    density_hidden, density_out = self.density_mlp[0].weight, self.density_mlp[2].weight  # [W, I], [1, W]
    albedo_hidden, albedo_out = self.albedo_mlp[0].weight, self.albedo_mlp[2].weight  # [W, I], [3, W]
    width, rows = density_hidden.shape[0], features.shape[0]
    with self._mlp_precision(points):
        # on rows bucketed as the field's own MLPs take them (backend.nerf.field.MLP_ROW_BUCKET), cut back below
        hidden = F.linear(bucketed_rows(features), torch.cat([density_hidden, albedo_hidden]))  # [N, 2W]
        active = hidden > 0
        hidden = hidden * active
        outputs = F.linear(hidden, torch.block_diag(density_out, albedo_out))[:rows]  # [N, 4]: density, albedo
        raw, raw_albedo = outputs[:, :1], outputs[:, 1:]
        # d raw / d features: the density output row masked by its ReLU, back through its hidden weight
        row = density_out.to(raw.dtype)[0] * active[:, :width]
        input_gradient = torch.matmul(row, density_hidden.to(raw.dtype))[:rows]  # [N, I]
    density, normals = self._density_and_normals(points, raw, points_gradient(input_gradient, feature_gradient,
                                                                              axis_factor))
    return density, torch.sigmoid(raw_albedo.to(points.dtype)), normals
