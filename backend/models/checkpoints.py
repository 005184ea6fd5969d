"""Reference (LDM) checkpoint layout <-> the project's modules: key conversion both ways and strict loading.

Every conversion of foreign checkpoint names lives here. Loading is strict: a checkpoint with a missing,
unexpected or mis-shaped key is refused with a ``CheckpointError`` that names the keys.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from backend.errors import UserError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.model."
CLIP_VISUAL_PREFIX = CLIP_PREFIX + "visual."


class CheckpointError(UserError, ValueError):
    """A checkpoint that does not fit the model: the message names the offending keys."""


def _listing(title: str, keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{len(keys)} {title}: {shown}{more}"


def check_keys(
    what: str,
    given: Mapping[str, torch.Tensor],
    expected_shapes: Mapping[str, tuple[int, ...]],
    ignored: Iterable[str] = (),
) -> None:
    """Raise a CheckpointError naming every missing, unexpected or mis-shaped key."""
    ignored = set(ignored)
    missing = sorted(k for k in expected_shapes if k not in given)
    unexpected = sorted(k for k in given if k not in expected_shapes and k not in ignored)
    misshaped = sorted(
        f"{k} {list(given[k].shape)} (expected {list(shape)})"
        for k, shape in expected_shapes.items()
        if k in given and tuple(given[k].shape) != tuple(shape)
    )
    problems = []
    if missing:
        problems.append(_listing("missing keys", missing))
    if unexpected:
        problems.append(_listing("unexpected keys", unexpected))
    if misshaped:
        problems.append(_listing("mis-shaped keys", misshaped))
    if problems:
        raise CheckpointError(f"{what} does not match the model: " + "; ".join(problems))


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def load_into(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> nn.Module:
    """Strictly load (own key names) into ``module``, adopting the given tensors (works for meta-built modules)."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    check_keys(what, state_dict, expected)
    module.load_state_dict(dict(state_dict), strict=True, assign=True)
    return module


# ----------------------------------------------------------------------------------------------------------------
# UNet: diffusers UNet2DConditionModel names <-> LDM openaimodel names
# ----------------------------------------------------------------------------------------------------------------

_RESNET_TO_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_TOP_LEVEL_TO_LDM = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "class_embedding.linear_1": "camera_embed.0",
    "class_embedding.linear_2": "camera_embed.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _resnet_to_ldm(rest: str) -> str:
    layer, _, param = rest.partition(".")
    if layer not in _RESNET_TO_LDM:
        raise KeyError(layer)
    return f"{_RESNET_TO_LDM[layer]}.{param}"


def unet_key_to_ldm(name: str, layers_per_block: int, up_levels_with_attention: set[int]) -> str:
    """The LDM name of one diffusers UNet parameter name."""
    per_level = layers_per_block + 1
    for prefix, ldm in _TOP_LEVEL_TO_LDM.items():
        if name.startswith(prefix + "."):
            return ldm + name[len(prefix) :]
    match = re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name)
    if match:
        level, kind, index, rest = int(match[1]), match[2], int(match[3]), match[4]
        block = 1 + level * per_level + index
        return f"input_blocks.{block}.0.{_resnet_to_ldm(rest)}" if kind == "resnets" else f"input_blocks.{block}.1.{rest}"
    match = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", name)
    if match:
        return f"input_blocks.{(int(match[1]) + 1) * per_level}.0.op.{match[2]}"
    match = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", name)
    if match:
        kind, index, rest = match[1], int(match[2]), match[3]
        return f"middle_block.{2 * index}.{_resnet_to_ldm(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"
    match = re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name)
    if match:
        level, kind, index, rest = int(match[1]), match[2], int(match[3]), match[4]
        block = level * per_level + index
        return f"output_blocks.{block}.0.{_resnet_to_ldm(rest)}" if kind == "resnets" else f"output_blocks.{block}.1.{rest}"
    match = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", name)
    if match:
        level = int(match[1])
        slot = 2 if level in up_levels_with_attention else 1
        return f"output_blocks.{level * per_level + layers_per_block}.{slot}.conv.{match[2]}"
    raise KeyError(f"no LDM name for UNet parameter {name}")


def unet_key_map(unet) -> dict[str, str]:
    """{LDM name: diffusers name} for every tensor of ``unet``'s state dict."""
    layers_per_block = unet.config.layers_per_block
    up_attention = {i for i, block in enumerate(unet.up_blocks) if getattr(block, "attentions", None)}
    return {unet_key_to_ldm(name, layers_per_block, up_attention): name for name in unet.state_dict()}


def load_unet_ldm_state_dict(unet, state_dict: Mapping[str, torch.Tensor]):
    """Strictly load a UNet state dict in reference names (without ``model.diffusion_model.``)."""
    key_map = unet_key_map(unet)
    own_shapes = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    check_keys("UNet checkpoint", state_dict, {ldm: own_shapes[own] for ldm, own in key_map.items()})
    return load_into(unet, {own: state_dict[ldm] for ldm, own in key_map.items()}, "UNet checkpoint")


def unet_ldm_state_dict(unet) -> dict[str, torch.Tensor]:
    """The UNet's weights in reference names (without prefix)."""
    own = unet.state_dict()
    return {ldm: own[name] for ldm, name in unet_key_map(unet).items()}


# ----------------------------------------------------------------------------------------------------------------
# VAE: diffusers AutoencoderKL names <-> LDM autoencoder names
# ----------------------------------------------------------------------------------------------------------------

_VAE_RESNET_TO_LDM = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION_TO_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_key_to_ldm(name: str, num_up_blocks: int) -> str:
    """The LDM name of one diffusers AutoencoderKL parameter name."""
    simple = {
        "quant_conv": "quant_conv",
        "post_quant_conv": "post_quant_conv",
        "encoder.conv_in": "encoder.conv_in",
        "encoder.conv_out": "encoder.conv_out",
        "encoder.conv_norm_out": "encoder.norm_out",
        "decoder.conv_in": "decoder.conv_in",
        "decoder.conv_out": "decoder.conv_out",
        "decoder.conv_norm_out": "decoder.norm_out",
    }
    for prefix, ldm in simple.items():
        if name.startswith(prefix + "."):
            return ldm + name[len(prefix) :]

    def resnet(rest: str) -> str:
        layer, _, param = rest.partition(".")
        return f"{_VAE_RESNET_TO_LDM.get(layer, layer)}.{param}"

    match = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", name)
    if match:
        return f"encoder.down.{match[1]}.block.{match[2]}.{resnet(match[3])}"
    match = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", name)
    if match:
        return f"encoder.down.{match[1]}.downsample.conv.{match[2]}"
    match = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", name)
    if match:
        return f"decoder.up.{num_up_blocks - 1 - int(match[1])}.block.{match[2]}.{resnet(match[3])}"
    match = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", name)
    if match:
        return f"decoder.up.{num_up_blocks - 1 - int(match[1])}.upsample.conv.{match[2]}"
    match = re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", name)
    if match:
        return f"{match[1]}.mid.block_{int(match[2]) + 1}.{resnet(match[3])}"
    match = re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", name)
    if match and match[2] in _VAE_ATTENTION_TO_LDM:
        return f"{match[1]}.mid.attn_1.{_VAE_ATTENTION_TO_LDM[match[2]]}.{match[3]}"
    raise KeyError(f"no LDM name for VAE parameter {name}")


def vae_key_map(vae) -> dict[str, str]:
    """{LDM name: diffusers name} for every tensor of ``vae``'s state dict."""
    num_up = len(vae.decoder.up_blocks)
    return {vae_key_to_ldm(name, num_up): name for name in vae.state_dict()}


def _is_attention_projection(ldm_name: str) -> bool:
    return re.search(r"mid\.attn_1\.(q|k|v|proj_out)\.weight$", ldm_name) is not None


def load_vae_ldm_state_dict(vae, state_dict: Mapping[str, torch.Tensor]):
    """Strictly load a VAE state dict in reference names (without ``first_stage_model.``) through diffusers'
    own LDM-VAE converter."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    key_map = vae_key_map(vae)
    own_shapes = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    expected = {}
    for ldm, own in key_map.items():
        # The reference's attention projections are 1x1 convolutions; diffusers' are linear layers.
        expected[ldm] = own_shapes[own] + ((1, 1) if _is_attention_projection(ldm) else ())
    check_keys("VAE checkpoint", state_dict, expected)
    converted = convert_ldm_vae_checkpoint(dict(state_dict), dict(vae.config))
    return load_into(vae, converted, "VAE checkpoint (after conversion)")


def vae_ldm_state_dict(vae) -> dict[str, torch.Tensor]:
    """The VAE's weights in reference names (without prefix); attention projections as 1x1 convolutions."""
    own = vae.state_dict()
    out = {}
    for ldm, name in vae_key_map(vae).items():
        tensor = own[name]
        out[ldm] = tensor[:, :, None, None] if _is_attention_projection(ldm) else tensor
    return out


# ----------------------------------------------------------------------------------------------------------------
# Whole reference checkpoints (isotropic3d.ckpt, MVDream's sd-v2.1-base-4view.pt)
# ----------------------------------------------------------------------------------------------------------------

REFERENCE_LAYOUTS = ("isotropic3d", "mvdream")


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """'isotropic3d' (CLIP image tower as conditioning) or 'mvdream' (CLIP text transformer)."""
    if any(k.startswith(CLIP_VISUAL_PREFIX) for k in state_dict):
        return "isotropic3d"
    if any(k.startswith(CLIP_PREFIX + "transformer.") for k in state_dict):
        return "mvdream"
    if not any(k.startswith(UNET_PREFIX) for k in state_dict):
        raise CheckpointError(
            "not an Isotropic3D/MVDream checkpoint: it has no 'model.diffusion_model.*' (UNet) keys"
        )
    raise CheckpointError(
        "cannot tell the checkpoint's kind: it has neither 'cond_stage_model.model.visual.*' (Isotropic3D) nor "
        "'cond_stage_model.model.transformer.*' (MVDream) keys"
    )


def conditioning_leftover_shapes(open_clip_config: dict, layout: str) -> dict[str, tuple[int, ...]]:
    """Shapes of the ``cond_stage_model.model.*`` tensors that the reference saves but this project does not run:
    the CLIP text side left over in Isotropic3D (whose embedder deletes only the text transformer), or MVDream's
    whole text encoder (whose embedder deletes the image tower). Worked out once per configuration and layout (a
    whole CLIP on the meta device: ~0.5 CPU s at the published size, paid by every load and save before)."""
    return dict(_leftover_shapes(json.dumps(open_clip_config, sort_keys=True), layout))


@functools.cache
def _leftover_shapes(open_clip_config_json: str, layout: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    from backend.compat import ensure_torchvision_ops

    ensure_torchvision_ops()
    from open_clip.model import CLIP

    open_clip_config = json.loads(open_clip_config_json)
    with torch.device("meta"):
        clip = CLIP(open_clip_config["embed_dim"], open_clip_config["vision_cfg"], open_clip_config["text_cfg"])
    dropped = "transformer." if layout == "isotropic3d" else "visual."
    shapes = []
    for name, tensor in clip.state_dict().items():
        if name.startswith(dropped) or (layout == "isotropic3d" and name.startswith("visual.")):
            continue
        if name == "attn_mask":  # non-persistent in the reference
            continue
        shapes.append((name, tuple(tensor.shape)))
    return tuple(shapes)


def split_reference_state_dict(
    state_dict: Mapping[str, torch.Tensor], layout: str, open_clip_config: dict
) -> dict[str, dict[str, torch.Tensor]]:
    """Split a whole reference state dict into its parts (prefixes stripped), refusing unknown top-level keys:
    {'unet', 'vae', 'image_encoder' (visual tower; empty for MVDream), 'conditioning_leftovers', 'schedule'}."""
    from backend.models.schedule import SCHEDULE_BUFFER_NAMES

    if layout not in REFERENCE_LAYOUTS:
        raise ValueError(f"unknown checkpoint layout {layout!r}")
    parts = {
        "unet": strip_prefix(state_dict, UNET_PREFIX),
        "vae": strip_prefix(state_dict, VAE_PREFIX),
        "image_encoder": strip_prefix(state_dict, CLIP_VISUAL_PREFIX) if layout == "isotropic3d" else {},
        "conditioning_leftovers": {
            k: v for k, v in strip_prefix(state_dict, CLIP_PREFIX).items() if not k.startswith("visual.")
        }
        if layout == "isotropic3d"
        else strip_prefix(state_dict, CLIP_PREFIX),
        "schedule": {k: v for k, v in state_dict.items() if k in SCHEDULE_BUFFER_NAMES},
    }
    known = (UNET_PREFIX, VAE_PREFIX, CLIP_PREFIX)
    unknown = sorted(k for k in state_dict if not k.startswith(known) and k not in SCHEDULE_BUFFER_NAMES)
    if layout == "mvdream":
        unknown += sorted(k for k in state_dict if k.startswith(CLIP_VISUAL_PREFIX))
    if unknown:
        raise CheckpointError(f"{layout} checkpoint does not match the model: " + _listing("unexpected keys", unknown))
    check_keys(f"{layout} checkpoint (schedule buffers)", parts["schedule"], {k: (1000,) for k in SCHEDULE_BUFFER_NAMES})
    check_keys(
        f"{layout} checkpoint",
        {CLIP_PREFIX + k: v for k, v in parts["conditioning_leftovers"].items()},
        {CLIP_PREFIX + k: s for k, s in conditioning_leftover_shapes(open_clip_config, layout).items()},
    )
    return parts


def unwrap_state_dict(loaded) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded checkpoint file (a bare state dict, or Lightning's {'state_dict': ...})."""
    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError("the file does not hold a state dict of tensors")
    return dict(loaded)
