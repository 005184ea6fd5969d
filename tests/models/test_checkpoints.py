"""Whole reference checkpoints: strict loading of the full-size layouts, clear errors, saving back."""

from __future__ import annotations

import json

import pytest
import torch

from backend.models import checkpoints as ckpt
from backend.models.multiview_model import (
    load_checkpoint,
    model_from_reference_state_dict,
    reference_state_dict,
    save_checkpoint,
)
from backend.models.schedule import schedule_buffers


def manifest_state_dict(golden_dir, name):
    """Every key of a published checkpoint with its shape and dtype, as meta tensors (no memory)."""
    manifest = json.loads((golden_dir / name).read_text())
    tensors = {
        key: torch.empty(spec["shape"], dtype=getattr(torch, spec["dtype"]), device="meta")
        for key, spec in manifest["keys"].items()
    }
    return manifest, tensors


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_isotropic3d_checkpoint_layout_loads_strictly(golden_dir):
    manifest, state = manifest_state_dict(golden_dir, "isotropic3d_ckpt_keys.json")
    model = model_from_reference_state_dict(state)
    assert model.camera_encoding == "isotropic3d"
    assert count(model.unet) == manifest["per_prefix"]["model.diffusion_model."]["parameters"] == 867_572_164
    assert count(model.vae) == manifest["per_prefix"]["first_stage_model."]["parameters"]
    assert count(model.image_encoder.visual) == manifest["per_prefix"]["cond_stage_model.model.visual."]["parameters"]
    # every tensor of the modules was adopted from the checkpoint
    unet_weight = model.unet.conv_in.weight
    assert unet_weight is not None and unet_weight.is_meta
    saved = reference_state_dict(model, "isotropic3d")
    assert set(saved) == set(manifest["keys"])
    assert all(list(saved[k].shape) == manifest["keys"][k]["shape"] for k in saved)


def test_mvdream_checkpoint_layout_loads_strictly(golden_dir):
    manifest, state = manifest_state_dict(golden_dir, "mvdream_sd21_ckpt_keys.json")
    model = model_from_reference_state_dict(state)
    assert model.camera_encoding == "mvdream"
    assert model.image_encoder is None
    assert count(model.unet) == 867_572_164
    saved = reference_state_dict(model, "mvdream")
    assert set(saved) == set(manifest["keys"])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("model.diffusion_model.camera_embed.0.weight"), "missing keys: camera_embed.0.weight"),
        (lambda s: s.pop("first_stage_model.encoder.mid.attn_1.q.weight"), "missing keys: encoder.mid.attn_1.q.weight"),
        (lambda s: s.pop("cond_stage_model.model.visual.proj"), "missing keys: proj"),
        (lambda s: s.pop("cond_stage_model.model.logit_scale"), "missing keys: cond_stage_model.model.logit_scale"),
        (lambda s: s.pop("betas"), "missing keys: betas"),
        (
            lambda s: s.__setitem__("model.diffusion_model.extra_layer.weight", torch.empty(3, device="meta")),
            "unexpected keys: extra_layer.weight",
        ),
        (lambda s: s.__setitem__("ema_decay", torch.empty(1, device="meta")), "unexpected keys: ema_decay"),
        (
            lambda s: s.__setitem__("model.diffusion_model.time_embed.0.weight", torch.empty(1280, 321, device="meta")),
            r"mis-shaped keys: time_embed.0.weight \[1280, 321\] \(expected \[1280, 320\]\)",
        ),
    ],
)
def test_wrong_checkpoint_names_the_keys(golden_dir, change, message):
    _, state = manifest_state_dict(golden_dir, "isotropic3d_ckpt_keys.json")
    change(state)
    with pytest.raises(ckpt.CheckpointError, match=message):
        model_from_reference_state_dict(state)


def test_not_a_diffusion_checkpoint_is_refused():
    with pytest.raises(ckpt.CheckpointError, match="no 'model.diffusion_model"):
        model_from_reference_state_dict({"weight": torch.zeros(3)})


def test_different_noise_schedule_is_refused(tiny_model):
    model = tiny_model
    state = reference_state_dict(model)
    state["betas"] = state["betas"] * 1.5
    with pytest.raises(ckpt.CheckpointError, match="different noise schedule"):
        model_from_reference_state_dict(state, configs=model.configs)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_tiny_model_round_trips_through_a_file(tiny_model, tmp_path, suffix):
    model = tiny_model  # the session's (saving reads it, changes nothing)
    path = save_checkpoint(model, tmp_path / f"tiny{suffix}")
    loaded = load_checkpoint(path, configs=None if suffix == ".safetensors" else model.configs)
    before, after = reference_state_dict(model), reference_state_dict(loaded)
    assert set(before) == set(after)
    assert all(torch.equal(before[k], after[k]) for k in before)
    x = torch.randn(4, 4, 16, 16)  # a quarter of the 32^2 latents' UNet cost; the same layers run
    t = torch.tensor([10, 200, 500, 999])
    context = torch.randn(4, 1, model.configs["unet"]["context_dim"])
    camera = torch.randn(4, 16)
    with torch.no_grad():
        assert torch.equal(
            model.unet(x, t, context=context, camera=camera, num_frames=4),
            loaded.unet(x, t, context=context, camera=camera, num_frames=4),
        )


def test_a_checkpoint_in_torchs_legacy_format_loads_too(tiny_model, tmp_path):
    """torch.save's format before torch 1.6 (not a zip, which torch cannot memory-map): read whole."""
    path = tmp_path / "legacy.ckpt"
    torch.save(reference_state_dict(tiny_model), path, _use_new_zipfile_serialization=False)
    before, after = reference_state_dict(tiny_model), reference_state_dict(load_checkpoint(path, tiny_model.configs))
    assert set(before) == set(after) and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"PK\x03\x04 a zip's start, then nothing"])
def test_unreadable_file_is_a_checkpoint_error(tmp_path, content):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(content)
    with pytest.raises(ckpt.CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_lightning_wrapped_state_dict_is_unwrapped():
    state = {"a": torch.zeros(1)}
    assert ckpt.unwrap_state_dict({"state_dict": state, "epoch": 3}) == state
    with pytest.raises(ckpt.CheckpointError):
        ckpt.unwrap_state_dict({"state_dict": {"a": "text"}})


def test_schedule_buffers_are_saved(golden_dir, tiny_model):
    saved = reference_state_dict(tiny_model)
    for key, value in schedule_buffers().items():
        assert torch.equal(saved[key], value)
