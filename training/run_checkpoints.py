"""Checkpoints of a training run: ``OUT/checkpoints/step-NNNNNNN/`` holding

- ``model.safetensors``: the whole model in the reference (Isotropic3D) layout, configs in its metadata, so
  ``load_checkpoint`` / ``iso3d generate --checkpoint`` take it as it is;
- ``model-ema.safetensors``: the same with the exponential moving average of the weights (when enabled);
- ``training_state.pt``: optimizer, LR scheduler, weight average, RNG states, the step count and the run's
  settings, for an exact resume.

A checkpoint is written into a hidden staging folder and published by one rename; ``OUT/checkpoints/latest``
names the newest one. Only the main process writes.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch

from backend.models.multiview_model import save_checkpoint
from blender_addon.core.atomic_files import write_text_atomically

CHECKPOINTS = "checkpoints"
LATEST = "latest"
MODEL_FILE = "model.safetensors"
EMA_MODEL_FILE = "model-ema.safetensors"
STATE_FILE = "training_state.pt"


def rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_run_checkpoint(out_dir: Path, step: int, model, training_state: dict, weight_average=None, keep: int = 0) -> Path:
    """Writes the checkpoint after ``step`` optimizer steps and returns its folder; keeps the newest ``keep``
    checkpoints (0 = all)."""
    root = Path(out_dir) / CHECKPOINTS
    final = root / f"step-{step:07d}"
    staging = root / f".step-{step:07d}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_checkpoint(model, staging / MODEL_FILE, layout="isotropic3d")
    if weight_average is not None:
        with weight_average.swapped_into(model.unet):
            save_checkpoint(model, staging / EMA_MODEL_FILE, layout="isotropic3d")
    torch.save({**training_state, "step": step, "rng": rng_states()}, staging / STATE_FILE)
    if final.exists():
        shutil.rmtree(final)
    staging.replace(final)
    write_text_atomically(root / LATEST, final.name + "\n")
    if keep > 0:
        for old in sorted(root.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    root = Path(out_dir) / CHECKPOINTS
    pointer = root / LATEST
    if pointer.is_file():
        named = root / pointer.read_text(encoding="utf-8").strip()
        if (named / STATE_FILE).is_file():
            return named
    complete = [p for p in sorted(root.glob("step-*")) if (p / STATE_FILE).is_file() and (p / MODEL_FILE).is_file()]
    return complete[-1] if complete else None


def load_training_state(checkpoint: Path) -> dict:
    return torch.load(Path(checkpoint) / STATE_FILE, map_location="cpu", weights_only=False)
