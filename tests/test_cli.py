"""`iso3d preview` as a user runs it: a real subprocess, real files, one-line errors with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "example.png"


def iso3d(*args, env_extra=None, cwd=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    env.pop("ISO3D_CHECKPOINT", None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or REPO_ROOT,
        timeout=600,
    )


def test_preview_with_tiny_model_writes_a_grid_and_says_untrained(tmp_path):
    out = tmp_path / "grid.png"
    result = iso3d("preview", EXAMPLE, "--model", "tiny", "--steps", "2", "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    grid = np.asarray(Image.open(out))
    assert grid.shape == (256, 1024, 3)
    assert "untrained" in result.stdout and "4 views" in result.stdout


def test_preview_from_a_checkpoint_file(tmp_path):
    """--checkpoint loads through the real loader (a tiny checkpoint saved in the reference layout)."""
    from backend.models.multiview_model import build_tiny_model, save_checkpoint

    checkpoint = save_checkpoint(build_tiny_model(seed=2), tmp_path / "tiny.safetensors")
    out = tmp_path / "grid.png"
    result = iso3d("preview", EXAMPLE, "--checkpoint", checkpoint, "--steps", "1", "--views", "2", "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert np.asarray(Image.open(out)).shape == (256, 512, 3)
    assert "tiny.safetensors" in result.stdout
    # the same file given through the environment variable
    result = iso3d("preview", EXAMPLE, "--steps", "1", "--out", out, "--quiet", env_extra={"ISO3D_CHECKPOINT": str(checkpoint)})
    assert result.returncode == 0, result.stderr


def one_line_error(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("iso3d: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    "make_input, fragments",
    [
        (lambda d: d / "missing.png", ["does not exist"]),
        (lambda d: (d / "t.png").write_text("hello") and d / "t.png", ["not an image"]),
        (lambda d: Image.new("1", (9000, 9000)).save(d / "h.png") or d / "h.png", ["limit is 64 megapixels"]),
    ],
)
def test_bad_images_get_one_line(tmp_path, make_input, fragments):
    path = make_input(tmp_path)
    one_line_error(iso3d("preview", path, "--model", "tiny", "--out", tmp_path / "o.png"), *fragments)
    assert not (tmp_path / "o.png").exists()


def test_wrong_checkpoints_get_one_line(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    one_line_error(iso3d("preview", EXAMPLE, "--checkpoint", bad), "not a readable checkpoint")
    one_line_error(iso3d("preview", EXAMPLE, "--checkpoint", tmp_path / "none.ckpt"), "does not exist")
    import torch

    wrong = tmp_path / "wrong.ckpt"
    torch.save({"model.diffusion_model.foo": torch.zeros(2)}, wrong)
    one_line_error(iso3d("preview", EXAMPLE, "--checkpoint", wrong), "cannot tell the checkpoint's kind")


def test_no_weights_offline_says_what_to_do(tmp_path):
    result = iso3d("preview", EXAMPLE, "--offline", env_extra={"HF_HUB_CACHE": str(tmp_path)})
    one_line_error(result, "--model tiny")


def test_impossible_settings_get_one_line(tmp_path):
    one_line_error(iso3d("preview", EXAMPLE, "--model", "tiny", "--steps", "0"), "setting 'steps' must be")
    one_line_error(iso3d("preview", EXAMPLE, "--model", "tiny", "--device", "cuda:7"), "CUDA")


def test_existing_output_survives_a_failed_run(tmp_path):
    out = tmp_path / "grid.png"
    out.write_bytes(b"previous result")
    one_line_error(iso3d("preview", tmp_path / "missing.png", "--model", "tiny", "--out", out), "does not exist")
    assert out.read_bytes() == b"previous result"
