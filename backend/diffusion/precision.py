"""The guidance's floating-point precision: the weights' default dtype and the autocast dtype that goes with it.

The reference ran the guidance with float32 weights under float16 autocast (threestudio ``precision: 16-mixed``).
With CFG 10 and the 1/sqrt(alpha_bar) of the x0 target, the rounding of the UNet's output is amplified, so the
half type matters. Measured on an H200 at the published UNet size with random weights (``bench/guidance_precision.py``,
2026-12-02; mean |x0 - x0_fp32| of the SDS target, and ms per [uncond; cond] call of 1 object x 4 views compiled
with CUDA graphs):

    ==============================  ===========  ===========  ===========
    weights + autocast              t = 980      t = 500      ms / call
    ==============================  ===========  ===========  ===========
    float16 + float16 (default)     0.050        0.0062       6.85
    float32 + float16 (reference)   0.049        0.0062       8.51
    bfloat16 + bfloat16             0.398        0.050        6.61
    ==============================  ===========  ===========  ===========

So on CUDA the default is float16 weights under float16 autocast: the reference's precision, faster than the
reference's float32 weights (half the weight traffic) and 0.24 ms (4%) per call slower than bfloat16, whose x0
targets are 8x noisier. ``--dtype bfloat16`` stays available for a model whose activations overflow float16's range
(about 65,504); ``--dtype float32`` runs the reference's own mix. On the CPU the default stays float32.
"""

from __future__ import annotations

import torch

HALF_DTYPES = (torch.float16, torch.bfloat16)


def default_weights_dtype(device: torch.device) -> torch.dtype:
    """The model weights' dtype when none is asked for: float16 on CUDA, float32 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.float32


def guidance_autocast_dtype(weights_dtype: torch.dtype) -> torch.dtype:
    """The autocast dtype of the guidance (VAE encode + UNet) for weights of ``weights_dtype``.

    Half weights run under autocast to their own type (matmuls and convolutions in it; norms and softmax in float32,
    as autocast does); float32 weights under float16, the reference's ``16-mixed``."""
    return weights_dtype if weights_dtype in HALF_DTYPES else torch.float16


def overflow_hint(compute_dtype: torch.dtype | None) -> str:
    """What to add when the guidance, computing in ``compute_dtype`` (the autocast dtype, or the weights' dtype
    without autocast), produced a non-finite loss."""
    if compute_dtype == torch.float16:
        return " (float16 guidance can overflow: rerun with --dtype bfloat16)"
    return ""
