"""Model configurations: the published sizes (reference yaml values) and the tiny test size.

UNet configs use the reference ``unet_config.params`` keys, VAE configs the reference ``first_stage_config.params``
(``embed_dim`` + ``ddconfig``), image-encoder configs open_clip's model config (``embed_dim`` + ``vision_cfg``
[+ ``text_cfg``]).
"""

from __future__ import annotations

import copy

# isotropic/configs/mvd_infer.yaml (identical to MVDream's sd-v2-base.yaml UNet).
PUBLISHED_UNET = {
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "attention_resolutions": [4, 2, 1],
    "num_res_blocks": 2,
    "channel_mult": [1, 2, 4, 4],
    "num_head_channels": 64,
    "use_spatial_transformer": True,
    "use_linear_in_transformer": True,
    "transformer_depth": 1,
    "context_dim": 1024,
    "use_checkpoint": False,
    "legacy": False,
    "camera_dim": 16,
}

PUBLISHED_VAE = {
    "embed_dim": 4,
    "ddconfig": {
        "double_z": True,
        "z_channels": 4,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [],
        "dropout": 0.0,
    },
}

# open_clip ViT-H-14 (laion2b_s32b_b79k in the reference).
PUBLISHED_IMAGE_ENCODER = {
    "embed_dim": 1024,
    "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24},
}

# Tiny, untrained, same code paths: for CPU tests and the demo. The VAE still downsamples 8x and the UNet has the
# same four levels and multi-view attention (at levels 1-2 and the middle; level 0's 4x1024-token attention would
# dominate a CPU run), so shapes and data flow match the published model.
TINY_UNET = {
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 32,
    "attention_resolutions": [4, 2],
    "num_res_blocks": 1,
    "channel_mult": [1, 2, 2, 2],
    "num_head_channels": 16,
    "use_spatial_transformer": True,
    "use_linear_in_transformer": True,
    "transformer_depth": 1,
    "context_dim": 64,
    "use_checkpoint": False,
    "legacy": False,
    "camera_dim": 16,
}

TINY_VAE = {
    "embed_dim": 4,
    "ddconfig": {
        "double_z": True,
        "z_channels": 4,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,
        "ch_mult": [1, 1, 2, 2],
        "num_res_blocks": 1,
        "attn_resolutions": [],
        "dropout": 0.0,
    },
}

TINY_IMAGE_ENCODER = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}

# The camera code Isotropic3D's own weights were trained with: the default of every model, job and training run
# (MVDream's weights use "mvdream"; backend.diffusion.cameras encodes both).
DEFAULT_CAMERA_ENCODING = "isotropic3d"


def published_configs() -> dict:
    return copy.deepcopy({"unet": PUBLISHED_UNET, "vae": PUBLISHED_VAE, "image_encoder": PUBLISHED_IMAGE_ENCODER})


def tiny_configs() -> dict:
    return copy.deepcopy({"unet": TINY_UNET, "vae": TINY_VAE, "image_encoder": TINY_IMAGE_ENCODER})
