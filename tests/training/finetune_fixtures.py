"""Fixtures and helpers of the fine-tuning tests: a small dataset in the renderer's format, tiny checkpoints of both
kinds, their cache, and CLI helpers. Test modules import the fixtures (a module, not conftest.py, so that the
renderer's tests/training/conftest.py stays its own)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.render_format import write_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]


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


def tiny_args(stage: str, data: Path, init: Path | None, out: Path, *extra: str) -> list[str]:
    """iso3d-train arguments for a short CPU run of the tiny model."""
    args = [stage, "--data", str(data), "--out", str(out), "--model", "tiny", "--precision", "fp32",
            "--num-workers", "0", "--no-progress", "--warmup-steps", "0", "--lr", "1e-3"]
    if init is not None:
        args += ["--init", str(init)]
    return args + list(extra)


def subprocess_env(threads: int | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


@contextlib.contextmanager
def single_thread():
    """CPU kernels are bit-reproducible only with one thread (parallel reductions differ from run to run)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.train_cli", *args], cwd=REPO_ROOT, env=subprocess_env(),
                          capture_output=True, text=True, **kwargs)
