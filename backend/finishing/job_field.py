"""The saved field of a generation job folder (``iso3d generate``'s ``<out>.job``): config.json + checkpoint.pt."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from backend.errors import UserError
from backend.nerf.field import RadianceField
from backend.nerf.presets import GenerateConfig
from backend.nerf.trainer import CHECKPOINT_FORMAT, CHECKPOINT_NAME, CONFIG_NAME


class NoFieldError(UserError):
    """The job folder holds no usable field."""


def load_job_field(job_dir: str | Path, device: str | torch.device = "cpu") -> tuple[RadianceField, GenerateConfig]:
    """The job's RadianceField (eval mode, no gradients needed) and its GenerateConfig."""
    job_dir = Path(job_dir)
    checkpoint, config_path = job_dir / CHECKPOINT_NAME, job_dir / CONFIG_NAME
    if not job_dir.is_dir():
        raise NoFieldError(f"{job_dir} is not a folder (give the job folder of a generation, e.g. asset.job)")
    if not checkpoint.is_file():
        raise NoFieldError(f"{job_dir} holds no field: {CHECKPOINT_NAME} is missing (not a generation job folder?)")
    try:
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        config = GenerateConfig.from_dict(json.loads(config_path.read_text())) if config_path.is_file() \
            else GenerateConfig.from_dict(state["config"])
    except Exception as error:  # noqa: BLE001 - a damaged file raises many types; said as NoFieldError
        raise NoFieldError(f"cannot read the field in {job_dir}: {type(error).__name__}: {error}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "field" not in state:
        raise NoFieldError(f"{checkpoint} is not a generation checkpoint of this version")
    field = RadianceField(config.field).to(device)
    try:
        field.load_state_dict(state["field"])
    except RuntimeError as error:
        raise NoFieldError(f"the field in {checkpoint} does not match its config: {error}") from None
    field.eval()
    if torch.device(device).type == "cuda" and config.field.compile:
        field.use_compiled()
    return field, config
