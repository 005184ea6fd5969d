"""Finding the published weights: an explicit path, $ISO3D_CHECKPOINT, the Hugging Face cache, or a download."""

from __future__ import annotations

import os
from pathlib import Path

from backend.errors import UserError

HF_REPO_ID = "pkunliu/Isotropic3D"
HF_FILENAME = "isotropic3d.ckpt"
CHECKPOINT_ENV = "ISO3D_CHECKPOINT"


class WeightsNotFound(UserError, FileNotFoundError):
    """No checkpoint could be found or fetched; the message says what was tried and what to do."""


def find_checkpoint(path: str | os.PathLike | None = None, allow_download: bool = True) -> Path:
    """The checkpoint file to load, looking in this order: ``path``, $ISO3D_CHECKPOINT, the Hugging Face cache of
    ``pkunliu/Isotropic3D``, then a download from the Hub (when ``allow_download`` and not HF_HUB_OFFLINE)."""
    for source, candidate in (("--checkpoint", path), (f"${CHECKPOINT_ENV}", os.environ.get(CHECKPOINT_ENV))):
        if candidate:
            candidate = Path(candidate).expanduser()
            if not candidate.is_file():
                raise WeightsNotFound(f"checkpoint {candidate} (from {source}) does not exist or is not a file")
            return candidate

    import huggingface_hub

    cached = huggingface_hub.try_to_load_from_cache(HF_REPO_ID, HF_FILENAME)
    if isinstance(cached, str) and Path(cached).is_file():
        return Path(cached)
    hint = f"pass --checkpoint PATH, set ${CHECKPOINT_ENV}, or use --model tiny for the untrained test model"
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if not allow_download or offline:
        raise WeightsNotFound(f"no {HF_FILENAME} in the Hugging Face cache and downloads are off: {hint}")
    try:
        return Path(huggingface_hub.hf_hub_download(HF_REPO_ID, HF_FILENAME))
    except Exception as error:  # noqa: BLE001 - network errors come in many types; the message is what matters
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsNotFound(f"could not download {HF_REPO_ID}/{HF_FILENAME} ({reason}): {hint}") from None
