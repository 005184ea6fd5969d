"""`iso3d-train cache`: encodes every rendered view once (VAE posterior moments; CLIP embeddings of the input
views) into one safetensors file per object, so training needs neither the VAE nor the image tower on the GPU.

Resumable (valid files are kept) and shardable: under torchrun each process takes every WORLD_SIZE-th object.
"""

from __future__ import annotations

from pathlib import Path

import torch

from training import distributed
from training.data import cache_fingerprints, check_cache, write_object_cache
from training.model_setup import load_stage_model
from training.render_records import DatasetError, scan_render_folder


def precompute_cache(data: Path, init: Path, cache_dir: Path, tiny: bool = False, image_encoder: str | None = None,
                     skip_incomplete: bool = False, device: str = "auto", batch_size: int = 16) -> int:
    """Writes the missing or stale cache files of this process's objects; returns how many it wrote."""
    group = distributed.start(device)
    try:
        objects = scan_render_folder(data, skip_incomplete=skip_incomplete)
        # The frozen parts are the same in both stages; stage 1's loader also accepts MVDream checkpoints.
        model = load_stage_model(1, init, tiny=tiny, image_encoder=image_encoder).to(group.device)
        fingerprints = cache_fingerprints(model)
        written = 0
        for obj in objects[group.rank :: group.world_size]:
            try:
                check_cache([obj], cache_dir, fingerprints)
                continue
            except DatasetError:
                pass
            with torch.no_grad():
                write_object_cache(model, obj, Path(cache_dir), fingerprints, batch_size=batch_size)
            written += 1
        distributed.barrier(group)
        return written
    finally:
        distributed.stop(group)
