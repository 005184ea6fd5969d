"""The multi-view diffusion model as one object: UNet, VAE, image encoder, noise schedule and camera encoding.

Built at two sizes from the same code (published and tiny), loaded from a reference checkpoint, saved back in the
reference layout.
"""

from __future__ import annotations

import contextlib
import copy
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from backend.models import checkpoints as ckpt
from backend.models.configs import DEFAULT_CAMERA_ENCODING, published_configs, tiny_configs
from backend.models.image_encoder import CLIPImageEncoder
from backend.models.mv_unet import MultiViewUNet
from backend.models.schedule import SCHEDULE_BUFFER_NAMES, schedule_buffers
from backend.models.vae import build_vae
from blender_addon.core.atomic_files import atomic_path

from diffusers.utils import logging as _diffusers_logging

# diffusers warns on every dtype cast of a model that has no fp32-only modules; nothing to act on here.
_diffusers_logging.set_verbosity_error()

CONFIG_METADATA_KEY = "iso3d_configs"


@dataclass
class MultiViewDiffusionModel:
    unet: MultiViewUNet
    vae: Any  # diffusers AutoencoderKL
    image_encoder: CLIPImageEncoder | None
    configs: dict
    name: str
    trained: bool
    camera_encoding: str = DEFAULT_CAMERA_ENCODING
    schedule: dict[str, torch.Tensor] = field(default_factory=schedule_buffers)
    # Reference tensors this project does not run but keeps so that a save gives the same checkpoint back.
    conditioning_leftovers: dict[str, torch.Tensor] = field(default_factory=dict)
    # The uncompiled UNet when ``unet`` was replaced by a compiled one (backend.models.acceleration).
    eager_unet: MultiViewUNet | None = None
    # The VAE encoder's moments function compiled for the SDS path (backend.models.acceleration.compile_vae_encoder);
    # None: the VAE's own eager encode.
    vae_encoder_moments: Any = None

    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.conv_in.weight.dtype

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.schedule["alphas_cumprod"]

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        for module in self.modules():
            module.to(device=device, dtype=dtype)
        return self

    def modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.unet, self.vae, self.image_encoder) if m is not None]

    def eval(self):
        for module in self.modules():
            module.eval().requires_grad_(False)
        return self

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Conditioning context [N, 1, D] for images [N, 3, 256, 256] in [-1, 1] on a white background."""
        if self.image_encoder is None:
            raise ValueError(f"{self.name} has no image encoder")
        images = images.to(self.device)
        return self.image_encoder(images).to(self.dtype)


def _seeded(seed: int | None):
    return torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()


def build_modules(configs: dict, device: str | torch.device = "cpu", seed: int | None = None):
    """Fresh (randomly initialised) UNet, VAE and image encoder; ``device='meta'`` allocates nothing."""
    with _seeded(seed), torch.device(device):
        if seed is not None:
            torch.manual_seed(seed)
        unet = MultiViewUNet.from_ldm_config(configs["unet"])
        vae = build_vae(configs["vae"])
        image_encoder = CLIPImageEncoder(configs["image_encoder"]) if configs.get("image_encoder") else None
    return unet, vae, image_encoder


def build_tiny_model(seed: int = 0) -> MultiViewDiffusionModel:
    """The tiny, untrained model (random weights from ``seed``) for tests and the CPU demo."""
    configs = tiny_configs()
    unet, vae, image_encoder = build_modules(configs, seed=seed)
    return MultiViewDiffusionModel(unet, vae, image_encoder, configs, name="tiny (untrained)", trained=False).eval()


def build_random_published_model(seed: int = 0, device: str | torch.device = "cpu") -> MultiViewDiffusionModel:
    """The published sizes with random weights (benchmarks, layout tests)."""
    configs = published_configs()
    unet, vae, image_encoder = build_modules(configs, device=device, seed=seed)
    return MultiViewDiffusionModel(
        unet, vae, image_encoder, configs, name="published size (random weights)", trained=False
    ).eval()


def model_from_reference_state_dict(
    state_dict: dict[str, torch.Tensor],
    configs: dict | None = None,
    layout: str | None = None,
    name: str = "isotropic3d",
) -> MultiViewDiffusionModel:
    """Strictly load a whole reference state dict (``isotropic3d.ckpt`` or MVDream's ``sd-v2.1-base-4view.pt``).

    The modules are built on the meta device and adopt the checkpoint's tensors (no second copy in memory).
    MVDream checkpoints carry a text encoder instead of the image tower: the result has ``image_encoder=None``.
    """
    configs = copy.deepcopy(configs or published_configs())
    layout = layout or ckpt.detect_layout(state_dict)
    parts = ckpt.split_reference_state_dict(state_dict, layout, configs["image_encoder"])
    unet, vae, image_encoder = build_modules(configs, device="meta")
    ckpt.load_unet_ldm_state_dict(unet, parts["unet"])
    ckpt.load_vae_ldm_state_dict(vae, parts["vae"])
    if layout == "isotropic3d":
        ckpt.load_into(image_encoder.visual, parts["image_encoder"], "image encoder checkpoint")
    else:
        image_encoder = None
    schedule = parts["schedule"]
    if not any(t.is_meta for t in schedule.values()):
        expected = schedule_buffers()
        for key in SCHEDULE_BUFFER_NAMES:
            if not torch.allclose(schedule[key].float(), expected[key], rtol=1e-5, atol=1e-7):
                raise ckpt.CheckpointError(f"{layout} checkpoint has a different noise schedule ({key} differs)")
    return MultiViewDiffusionModel(
        unet,
        vae,
        image_encoder,
        configs,
        name=name,
        trained=True,
        camera_encoding="isotropic3d" if layout == "isotropic3d" else "mvdream",
        conditioning_leftovers=parts["conditioning_leftovers"],
    ).eval()


def reference_state_dict(model: MultiViewDiffusionModel, layout: str = "isotropic3d") -> dict[str, torch.Tensor]:
    """The model's weights in the reference checkpoint layout (all keys a strict reference load expects)."""
    if layout not in ckpt.REFERENCE_LAYOUTS:
        raise ValueError(f"unknown checkpoint layout {layout!r}")
    out = {ckpt.UNET_PREFIX + k: v for k, v in ckpt.unet_ldm_state_dict(model.unet).items()}
    out.update({ckpt.VAE_PREFIX + k: v for k, v in ckpt.vae_ldm_state_dict(model.vae).items()})
    if layout == "isotropic3d":
        if model.image_encoder is None:
            raise ValueError("an isotropic3d checkpoint needs the image encoder")
        out.update({ckpt.CLIP_VISUAL_PREFIX + k: v for k, v in model.image_encoder.visual.state_dict().items()})
    leftover_shapes = ckpt.conditioning_leftover_shapes(model.configs["image_encoder"], layout)
    for key, shape in leftover_shapes.items():
        kept = model.conditioning_leftovers.get(key)
        out[ckpt.CLIP_PREFIX + key] = kept if kept is not None and tuple(kept.shape) == shape else torch.zeros(shape)
    out.update(model.schedule)
    return {k: v.detach().contiguous() for k, v in out.items()}


def save_checkpoint(model: MultiViewDiffusionModel, path: str | Path, layout: str = "isotropic3d") -> Path:
    """Write the model in the reference layout: ``.safetensors`` (configs kept in its metadata) or a torch
    ``.ckpt``/``.pt`` bare state dict like the published file."""
    path = Path(path)
    state = reference_state_dict(model, layout)
    with atomic_path(path) as temporary:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(temporary), metadata={CONFIG_METADATA_KEY: json.dumps(model.configs)})
        else:
            torch.save(state, temporary)
    return path


def load_checkpoint(path: str | Path, configs: dict | None = None) -> MultiViewDiffusionModel:
    """Load a reference checkpoint file (``.ckpt``/``.pt``/``.pth`` or ``.safetensors``)."""
    path = Path(path)
    zip_format = path.suffix != ".safetensors" and zipfile.is_zipfile(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                state = {k: handle.get_tensor(k) for k in handle.keys()}
            if configs is None and CONFIG_METADATA_KEY in metadata:
                configs = json.loads(metadata[CONFIG_METADATA_KEY])
        else:
            # memory-mapped (no second copy of the weights in memory) where the file is torch's zip format (torch
            # 1.6 and later); a file of the legacy format, which torch cannot map, is read whole
            state = torch.load(path, map_location="cpu", mmap=zip_format, weights_only=True)
    except ckpt.CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - a damaged file raises many types; said as CheckpointError
        kind = "" if zip_format or path.suffix == ".safetensors" else "not a torch checkpoint file: "
        first_line = (str(error).strip().splitlines() or [""])[0][:200]  # torch's own messages run to paragraphs
        raise ckpt.CheckpointError(f"{path} is not a readable checkpoint ({kind}{type(error).__name__}: "
                                   f"{first_line})") from None
    return model_from_reference_state_dict(ckpt.unwrap_state_dict(state), configs=configs, name=path.name)
