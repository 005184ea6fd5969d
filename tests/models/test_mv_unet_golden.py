"""The multi-view UNet reproduces the reference MultiViewUNetModel (golden/mv_unet_small) within 1e-5 relative."""

from __future__ import annotations

import pytest
import torch

from backend.models import load_mv_unet
from backend.models.checkpoints import UNET_PREFIX, strip_prefix
from tests.helpers.golden import relative_error

CASES = ["a", "b", "c", "d", "e"]


@pytest.fixture(scope="module")
def golden_unet(load_golden):
    meta, tensors = load_golden("mv_unet_small")
    weights = strip_prefix({k: v for k, v in tensors.items() if not k.startswith("io.")}, UNET_PREFIX)
    return meta, tensors, weights


def run_case(unet, meta, tensors, case):
    camera = tensors.get(f"io.{case}.camera")
    with torch.no_grad():
        return unet(
            tensors[f"io.{case}.x"],
            tensors[f"io.{case}.t"],
            context=tensors[f"io.{case}.context"],
            camera=camera,
            num_frames=meta["cases"][case]["num_frames"],
        )


@pytest.mark.parametrize("case", CASES)
def test_matches_reference(golden_unet, case):
    meta, tensors, weights = golden_unet
    unet = load_mv_unet(weights, meta["unet_config"])
    out = run_case(unet, meta, tensors, case)
    assert out.shape == tensors[f"io.{case}.out"].shape
    assert relative_error(out, tensors[f"io.{case}.out"]) < 1e-5


def test_no_camera_case_is_really_without_camera(golden_unet):
    """Case d has no camera: giving one must change the output (the camera path is live)."""
    meta, tensors, weights = golden_unet
    unet = load_mv_unet(weights, meta["unet_config"])
    with torch.no_grad():
        with_camera = unet(
            tensors["io.d.x"], tensors["io.d.t"], context=tensors["io.d.context"], camera=torch.ones(4, 16), num_frames=1
        )
    assert relative_error(with_camera, tensors["io.d.out"]) > 1e-2


def test_view_grouping_matters(golden_unet):
    """Treating case a's 2 objects x 4 views as 8 single views must not reproduce the reference."""
    meta, tensors, weights = golden_unet
    unet = load_mv_unet(weights, meta["unet_config"])
    with torch.no_grad():
        wrong = unet(
            tensors["io.a.x"], tensors["io.a.t"], context=tensors["io.a.context"], camera=tensors["io.a.camera"],
            num_frames=1,
        )
    assert relative_error(wrong, tensors["io.a.out"]) > 1e-2


@pytest.mark.parametrize("case", ["a", "e"])
def test_fast_paths_equal_plain_attention(golden_unet, case):
    """The single-token cross-attention shortcut and fused q/k/v projections equal the plain SDPA path."""
    from backend.models.acceleration import fuse_self_attention_projections

    meta, tensors, weights = golden_unet
    plain = load_mv_unet(weights, meta["unet_config"])
    plain.use_multiview_attention(exact_single_token=False)
    fast = load_mv_unet(weights, meta["unet_config"])
    fuse_self_attention_projections(fast)
    assert all(
        getattr(m, "fused_projections", False) for n, m in fast.named_modules() if n.endswith("attn1")
    )
    assert relative_error(run_case(fast, meta, tensors, case), run_case(plain, meta, tensors, case)) < 1e-5


def test_half_precision_runs_close_to_float32(golden_unet):
    meta, tensors, weights = golden_unet
    unet = load_mv_unet(weights, meta["unet_config"]).to(torch.bfloat16)
    case = "a"
    with torch.no_grad():
        out = unet(
            tensors["io.a.x"].bfloat16(),
            tensors["io.a.t"],
            context=tensors["io.a.context"].bfloat16(),
            camera=tensors["io.a.camera"],
            num_frames=4,
        )
    assert out.dtype == torch.bfloat16
    assert relative_error(out, tensors[f"io.{case}.out"]) < 0.05


def test_rejects_batch_that_is_not_whole_objects(golden_unet):
    meta, tensors, weights = golden_unet
    unet = load_mv_unet(weights, meta["unet_config"])
    with pytest.raises(ValueError, match="whole number of 3-view objects"):
        unet(tensors["io.a.x"], tensors["io.a.t"], context=tensors["io.a.context"], num_frames=3)


def test_unsupported_config_is_refused(golden_unet):
    meta, _, weights = golden_unet
    config = dict(meta["unet_config"], use_scale_shift_norm=True)
    with pytest.raises(ValueError, match="use_scale_shift_norm"):
        load_mv_unet(weights, config)
    with pytest.raises(ValueError, match="unsupported UNet config keys: num_classes"):
        load_mv_unet(weights, dict(meta["unet_config"], num_classes=10))
