"""The model a fine-tuning stage starts from, checked to be of the right kind before any training starts.

- Stage 1 starts from MVDream's ``sd-v2.1-base-4view.pt`` (text-conditioned; its CLIP text encoder is dropped)
  and adds the frozen image tower: open_clip's ViT-H-14 ``laion2b_s32b_b79k`` (the reference's
  FrozenOpenCLIPImageEmbedder), or the tower of an Isotropic3D-layout checkpoint given with ``--image-encoder``.
  A checkpoint that already has the image tower (an earlier stage-1 output) continues as it is.
- Stage 2 starts from a stage-1 checkpoint (Isotropic3D layout, image tower included).
- ``--model tiny``: the tiny test configs; a tiny MVDream-layout checkpoint gets a seeded random tiny tower.
"""

from __future__ import annotations

from pathlib import Path

from backend.errors import UserError
from backend.models import checkpoints as ckpt
from backend.models.configs import published_configs, tiny_configs
from backend.models.image_encoder import CLIPImageEncoder
from backend.models.multiview_model import MultiViewDiffusionModel, build_tiny_model, load_checkpoint

OPEN_CLIP_MODEL = "ViT-H-14"
OPEN_CLIP_PRETRAINED = "laion2b_s32b_b79k"


def open_clip_image_tower(configs: dict) -> CLIPImageEncoder:
    """The published image tower with open_clip's ViT-H-14 laion2b_s32b_b79k weights (Hugging Face cache, or a
    download when online); a UserError that says what to do otherwise."""
    from backend.compat import ensure_torchvision_ops

    ensure_torchvision_ops()
    import open_clip

    try:
        clip = open_clip.create_model(OPEN_CLIP_MODEL, pretrained=OPEN_CLIP_PRETRAINED, device="cpu")
    except Exception as error:  # noqa: BLE001 - network, cache and hub errors come in many types
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"stage 1 from an MVDream checkpoint needs the {OPEN_CLIP_MODEL} {OPEN_CLIP_PRETRAINED} image tower, and "
            f"open_clip could not load it ({reason}); run once online (it is then cached), or pass "
            "--image-encoder PATH with an Isotropic3D-layout checkpoint (e.g. isotropic3d.ckpt)"
        ) from None
    encoder = CLIPImageEncoder(configs["image_encoder"])
    ckpt.load_into(encoder.visual, clip.visual.state_dict(), f"open_clip {OPEN_CLIP_MODEL} image tower")
    return encoder


def image_tower_from(source: str | None, model: MultiViewDiffusionModel, tiny: bool) -> CLIPImageEncoder:
    """The frozen image tower for stage 1: ``None`` = open_clip's (random seeded one for the tiny model), or a path
    to an Isotropic3D-layout checkpoint whose tower is taken."""
    if source:
        donor = load_checkpoint(Path(source), configs=model.configs if tiny else None)
        if donor.image_encoder is None:
            raise UserError(f"--image-encoder {source} is an MVDream checkpoint with no image tower")
        return donor.image_encoder
    if tiny:
        return build_tiny_model(seed=0).image_encoder
    return open_clip_image_tower(model.configs)


def load_stage_model(stage: int, init: str | Path, tiny: bool = False, image_encoder: str | None = None):
    """The model to fine-tune in ``stage`` (1 or 2), read from ``init`` and checked (UserError if unfit)."""
    init = Path(init)
    if not init.is_file():
        raise UserError(f"--init {init} does not exist or is not a file")
    model = load_checkpoint(init, configs=tiny_configs() if tiny else None)
    if not tiny and model.configs != published_configs():
        raise UserError(f"--init {init.name} is not of the published size (a test checkpoint?); use --model tiny for those")
    if stage == 1:
        if model.image_encoder is None:
            model.image_encoder = image_tower_from(image_encoder, model, tiny)
        elif image_encoder:
            raise UserError(f"--init {init.name} already has an image tower; --image-encoder applies to MVDream checkpoints")
    elif stage == 2:
        if model.image_encoder is None:
            raise UserError(
                f"stage 2 starts from a stage-1 checkpoint (Isotropic3D layout, with the image tower); --init {init.name} "
                "is an MVDream checkpoint: run stage 1 first"
            )
        if image_encoder:
            raise UserError("--image-encoder applies to stage 1 only")
    else:
        raise UserError(f"unknown stage {stage} (1 or 2)")
    return model
