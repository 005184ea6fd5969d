"""The image conditioning: open_clip's ViT image tower with the reference preprocessing.

Output is the pooled, projected embedding ``ln_post(CLS) @ proj`` (not L2-normalised), with a sequence axis:
context [N, 1, embed_dim]. The unconditional context is all zeros.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from backend.compat import ensure_torchvision_ops

ensure_torchvision_ops()
from open_clip.model import _build_vision_tower  # noqa: E402

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
REFERENCE_INPUT_SIZE = 256  # the guidance and i2i.py feed 256x256 images


class CLIPImageEncoder(nn.Module):
    """``encoder(images)`` with images [N, 3, 256, 256] in [-1, 1] (white background) -> context [N, 1, D]."""

    def __init__(self, open_clip_config: dict[str, Any]):
        super().__init__()
        self.embed_dim = int(open_clip_config["embed_dim"])
        self.visual = _build_vision_tower(self.embed_dim, open_clip_config["vision_cfg"])
        self.input_size = int(open_clip_config["vision_cfg"].get("image_size", 224))

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> CLIP input: bicubic resize (align_corners=True) to 224, then CLIP mean/std.

        The reference resizes with kornia (antialias=True); at 256 -> 224 its antialias blur is a no-op, so plain
        bicubic without antialias gives the same values."""
        images = F.interpolate(
            images, size=(self.input_size, self.input_size), mode="bicubic", align_corners=True, antialias=False
        )
        images = (images + 1.0) / 2.0
        mean = images.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = images.new_tensor(CLIP_STD).view(1, 3, 1, 1)
        return (images - mean) / std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dtype = self.visual.conv1.weight.dtype
        return self.visual(self.preprocess(images.float()).to(dtype))[:, None, :]

    def unconditional(self, batch: int = 1, device=None, dtype=None) -> torch.Tensor:
        return torch.zeros(batch, 1, self.embed_dim, device=device, dtype=dtype)
