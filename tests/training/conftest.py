"""Session fixtures of the fine-tuning tests: a small dataset in the renderer's format, tiny checkpoints of both
kinds, and their latents/CLIP cache (built once per test process, shared by every test that asks).
The renderer tests (test_render_cli.py, test_render_workers.py) share ``objects``, the object files they render."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.render_format import write_dataset


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory) -> Path:
    """Three objects, 8 fixed + 4 random views of 64x64 pixels."""
    return write_dataset(tmp_path_factory.mktemp("data") / "renders", count=3)


@pytest.fixture(scope="session")
def mvdream_checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint in MVDream's layout (no image tower), as stage 1 starts from: `iso3d-train init-tiny`."""
    from training.train_cli import main

    path = tmp_path_factory.mktemp("ckpt") / "mvdream-tiny.safetensors"
    assert main(["init-tiny", str(path), "--seed", "1"]) == 0
    return path


@pytest.fixture(scope="session")
def stage1_checkpoint(mvdream_checkpoint, tmp_path_factory) -> Path:
    """A tiny checkpoint in the Isotropic3D layout (image tower included), as stage 2 starts from: the MVDream one
    with the tower stage 1 adds, so both share their frozen parts (and one cache)."""
    from backend.models.multiview_model import save_checkpoint
    from training.model_setup import load_stage_model

    model = load_stage_model(1, mvdream_checkpoint, tiny=True)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "stage1-tiny.safetensors")


@pytest.fixture(scope="session")
def dataset_cache(dataset_dir, stage1_checkpoint, tmp_path_factory) -> Path:
    """The latents/CLIP cache of ``dataset_dir`` for the frozen VAE and image tower of both tiny checkpoints."""
    from training.cache_command import precompute_cache

    cache = tmp_path_factory.mktemp("cache")
    assert precompute_cache(dataset_dir, stage1_checkpoint, cache, tiny=True, device="cpu") == 3
    return cache


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    """Object files in one folder (tests.helpers.object_files' dataset, good and bad; its textured GLB is written
    with bpy, so only blender-lane tests ask), plus a Z-up OBJ and an OBJ whose MTL is missing: {name: path}."""
    import os

    from tests.helpers import object_files

    folder = str(tmp_path_factory.mktemp("objects"))
    files = object_files.write_dataset(folder)
    # The tetrahedron written Z-up into an OBJ (a Y-up format): it rests on the file's z = 0 plane.
    files["zup"] = object_files.write_obj_as_is(os.path.join(folder, "zup.obj"), object_files.TETRA_VERTICES,
                                                object_files.TETRA_FACES)
    files["nomtl"] = object_files.write_obj(os.path.join(folder, "nomtl.obj"), *object_files.box_mesh(),
                                           header="mtllib nomtl.mtl\nusemtl painted\n")
    return files
