"""The reference oracles in tests/golden (see its README: the public reference code run with seeded random weights)."""

from __future__ import annotations

import json

from tests.helpers.paths import GOLDEN_DIR


def load_golden(name: str):
    """(JSON metadata or None, {tensor name: tensor}) of the oracle ``name`` (``mv_unet_small``, ...)."""
    from safetensors.torch import load_file

    meta_path = GOLDEN_DIR / f"{name}.json"
    tensors_path = GOLDEN_DIR / f"{name}.safetensors"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    return meta, (load_file(str(tensors_path)) if tensors_path.exists() else {})


def relative_error(out, ref) -> float:
    """max |out - ref| / max |ref|: the oracles' outputs are O(1), so 1e-5 is float32 arithmetic-order noise while
    the typical mistakes (view grouping, camera, padding) move them by 0.07-0.5 (tests/golden/README.md)."""
    return ((out.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
