"""The multi-view UNet: diffusers' UNet2DConditionModel in the SD-2.1-base layout with MVDream's camera MLP and
multi-view self-attention.

The camera MLP is diffusers' "projection" class embedding (Linear 16->1280, SiLU, Linear 1280->1280) added to the
time embedding; attn1 of every transformer block attends across the views of one object.
"""

from __future__ import annotations

from typing import Any

import torch

from backend.compat import ensure_torchvision_ops

ensure_torchvision_ops()
from diffusers import UNet2DConditionModel  # noqa: E402

from backend.models.attention import CrossAttnProcessor, MultiViewSelfAttnProcessor  # noqa: E402

# LDM `unet_config.params` keys this implementation understands; anything else is refused rather than ignored.
_KNOWN_LDM_KEYS = {
    "image_size",
    "in_channels",
    "out_channels",
    "model_channels",
    "attention_resolutions",
    "num_res_blocks",
    "channel_mult",
    "num_head_channels",
    "num_heads",
    "use_spatial_transformer",
    "use_linear_in_transformer",
    "transformer_depth",
    "context_dim",
    "use_checkpoint",
    "legacy",
    "camera_dim",
    "use_fp16",
    "dropout",
    "conv_resample",
    "dims",
    "use_scale_shift_norm",
    "resblock_updown",
}


def diffusers_config_from_ldm(ldm_config: dict[str, Any]) -> dict[str, Any]:
    """Translate the reference ``unet_config.params`` into ``UNet2DConditionModel`` arguments."""
    unknown = sorted(set(ldm_config) - _KNOWN_LDM_KEYS)
    if unknown:
        raise ValueError(f"unsupported UNet config keys: {', '.join(unknown)}")
    checks = {
        "use_spatial_transformer": True,
        "use_scale_shift_norm": False,
        "resblock_updown": False,
        "dims": 2,
        "conv_resample": True,
        "legacy": False,
    }
    for key, wanted in checks.items():
        if key in ldm_config and ldm_config[key] != wanted:
            raise ValueError(f"unsupported UNet config: {key}={ldm_config[key]!r} (only {wanted!r})")
    if not isinstance(ldm_config["num_res_blocks"], int):
        raise ValueError("unsupported UNet config: num_res_blocks must be one integer")
    depth = ldm_config.get("transformer_depth", 1)
    if not isinstance(depth, int):
        raise ValueError("unsupported UNet config: transformer_depth must be one integer")

    block_out = [ldm_config["model_channels"] * m for m in ldm_config["channel_mult"]]
    head_channels = ldm_config.get("num_head_channels", -1)
    num_heads = ldm_config.get("num_heads", -1)
    if head_channels == -1 and num_heads == -1:
        raise ValueError("UNet config needs num_head_channels or num_heads")
    heads = [channels // head_channels if head_channels != -1 else num_heads for channels in block_out]
    attention_levels = []
    resolution = 1
    for level in range(len(block_out)):
        attention_levels.append(resolution in set(ldm_config["attention_resolutions"]))
        resolution *= 2
    camera_dim = ldm_config.get("camera_dim")
    return {
        "sample_size": ldm_config["image_size"],
        "in_channels": ldm_config["in_channels"],
        "out_channels": ldm_config["out_channels"],
        "block_out_channels": block_out,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels)],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "layers_per_block": ldm_config["num_res_blocks"],
        "attention_head_dim": heads,  # diffusers' legacy name: the number of heads per level
        "cross_attention_dim": ldm_config["context_dim"],
        "use_linear_projection": bool(ldm_config.get("use_linear_in_transformer", False)),
        "transformer_layers_per_block": depth,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "act_fn": "silu",
        "downsample_padding": 1,
        "class_embed_type": "projection" if camera_dim else None,
        "projection_class_embeddings_input_dim": camera_dim or None,
    }


class MultiViewUNet(UNet2DConditionModel):
    """``model(x, t, context=..., camera=..., num_frames=F)`` returns the noise prediction.

    x [N, 4, h, w] with N = B*F object-major rows; t [N] (or a scalar); context [N, T, context_dim];
    camera [N, 16] camera codes (see backend.diffusion.cameras) or None for no camera.
    """

    @classmethod
    def from_ldm_config(cls, ldm_config: dict[str, Any]) -> "MultiViewUNet":
        model = cls(**diffusers_config_from_ldm(ldm_config))
        model.use_multiview_attention()
        return model

    def use_multiview_attention(self, exact_single_token: bool = True) -> None:
        processors = {}
        for name in self.attn_processors:
            if name.endswith("attn1.processor"):
                processors[name] = MultiViewSelfAttnProcessor()
            elif name.endswith("attn2.processor"):
                processors[name] = CrossAttnProcessor(exact_single_token=exact_single_token)
            else:
                raise ValueError(f"unexpected attention layer {name}")
        self.set_attn_processor(processors)

    def get_class_embed(self, sample: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor | None:
        # diffusers refuses a missing class label when a class embedding exists; the reference simply adds no
        # camera embedding then.
        if class_labels is None:
            return None
        return super().get_class_embed(sample, class_labels.to(self.class_embedding.linear_1.weight.dtype))

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        camera: torch.Tensor | None = None,
        num_frames: int = 1,
    ) -> torch.Tensor:
        if x.shape[0] % num_frames:
            raise ValueError(f"batch of {x.shape[0]} rows is not a whole number of {num_frames}-view objects")
        if camera is not None and self.class_embedding is None:
            raise ValueError("this UNet has no camera embedding, but a camera was given")
        return super().forward(
            x,
            timesteps,
            encoder_hidden_states=context,
            class_labels=camera,
            cross_attention_kwargs={"num_frames": num_frames},
            return_dict=False,
        )[0]
