"""`iso3d preview` as a user runs it: real files, one-line errors with exit code 2. These run in this process
through ``backend.cli.main`` (it returns the exit code and prints what a user sees: every `iso3d` process pays
~10 CPU seconds of torch and diffusers imports); `iso3d generate` and `iso3d export` as real subprocesses show that
the command line works end to end."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from backend.cli import main as iso3d
from tests.helpers import command_output
from tests.helpers.paths import EXAMPLE_IMAGE as EXAMPLE
from tests.helpers.paths import REPO_ROOT
from tests.helpers.processes import python, run


@pytest.fixture(autouse=True)
def no_checkpoint_from_the_environment(monkeypatch):
    monkeypatch.delenv("ISO3D_CHECKPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def one_line_error(code: int, capsys, *fragments) -> None:
    line = command_output.one_line_error(capsys, "iso3d", *fragments)
    assert code == 2, line


# slow: a CLI preview (~3 s); the default run keeps the CLI preview of a checkpoint file below
@pytest.mark.slow
def test_preview_with_tiny_model_writes_a_grid_and_says_untrained(tmp_path, capsys):
    out = tmp_path / "grid.png"
    code = iso3d(["preview", str(EXAMPLE), "--model", "tiny", "--steps", "1", "--out", str(out), "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape == (256, 1024, 3)
    assert "untrained" in stdout and "4 views" in stdout


def test_preview_from_a_checkpoint_file(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    """--checkpoint loads through the real loader (a tiny checkpoint saved in the reference layout)."""
    out = tmp_path / "grid.png"
    code = iso3d(["preview", str(EXAMPLE), "--checkpoint", str(tiny_checkpoint), "--steps", "1", "--views", "2",
                  "--out", str(out), "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert np.asarray(Image.open(out)).shape == (256, 512, 3)
    assert tiny_checkpoint.name in stdout
    # the same file given through the environment variable (one view: a quarter of the decode of the default four)
    monkeypatch.setenv("ISO3D_CHECKPOINT", str(tiny_checkpoint))
    out.unlink()
    assert iso3d(["preview", str(EXAMPLE), "--steps", "1", "--views", "1", "--out", str(out), "--quiet"]) == 0
    assert tiny_checkpoint.name in capsys.readouterr().out and out.is_file()


@pytest.mark.parametrize(
    "make_input, fragments",
    [
        (lambda d: d / "missing.png", ["does not exist"]),
        (lambda d: (d / "t.png").write_text("hello") and d / "t.png", ["not an image"]),
        (lambda d: Image.new("1", (9000, 9000)).save(d / "h.png") or d / "h.png", ["limit is 64 megapixels"]),
    ],
)
def test_bad_images_get_one_line(tmp_path, capsys, make_input, fragments):
    path = make_input(tmp_path)
    code = iso3d(["preview", str(path), "--model", "tiny", "--out", str(tmp_path / "o.png")])
    one_line_error(code, capsys, *fragments)
    assert not (tmp_path / "o.png").exists()


def test_wrong_checkpoints_get_one_line(tmp_path, capsys):
    import torch

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    one_line_error(iso3d(["preview", str(EXAMPLE), "--checkpoint", str(bad)]), capsys, "not a readable checkpoint")
    missing = tmp_path / "none.ckpt"
    one_line_error(iso3d(["preview", str(EXAMPLE), "--checkpoint", str(missing)]), capsys, "does not exist")
    wrong = tmp_path / "wrong.ckpt"
    torch.save({"model.diffusion_model.foo": torch.zeros(2)}, wrong)
    one_line_error(iso3d(["preview", str(EXAMPLE), "--checkpoint", str(wrong)]), capsys,
                   "cannot tell the checkpoint's kind")


def test_no_weights_offline_says_what_to_do(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # read once at import
    one_line_error(iso3d(["preview", str(EXAMPLE), "--offline"]), capsys, "--model tiny")


def test_impossible_settings_get_one_line(capsys):
    one_line_error(iso3d(["preview", str(EXAMPLE), "--model", "tiny", "--steps", "0"]), capsys, "setting 'steps' must be")
    one_line_error(iso3d(["preview", str(EXAMPLE), "--model", "tiny", "--device", "cuda:7"]), capsys, "CUDA")


def test_existing_output_survives_a_failed_run(tmp_path, capsys):
    out = tmp_path / "grid.png"
    out.write_bytes(b"previous result")
    code = iso3d(["preview", str(tmp_path / "missing.png"), "--model", "tiny", "--out", str(out)])
    one_line_error(code, capsys, "does not exist")
    assert out.read_bytes() == b"previous result"


@pytest.mark.integration
def test_generate_then_export_as_a_user_runs_them(tmp_path):
    """`iso3d generate` and `iso3d export` as real subprocesses (their error paths run in-process in
    tests/nerf/test_trainer.py and tests/finishing/test_finishing.py)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    out = tmp_path / "thing.glb"
    generated = run(python("-m", "backend.cli", "generate", EXAMPLE, "--model", "tiny", "--device", "cpu", "--preset",
                           "tiny", "--quiet", "--out", out, "--steps", "1", "--phases.resolution_before", "24",
                           "--mesh.resolution", "32", "--mesh.density_threshold", "2"),
                    env=env, cwd=REPO_ROOT, timeout=600)
    assert generated.returncode == 0, generated.stderr
    assert out.is_file() and (tmp_path / "thing.job").is_dir()
    exported = run(python("-m", "backend.cli", "export", tmp_path / "thing.job", "--faces", "100", "--texture", "64",
                          "--format", "glb", "--out", tmp_path / "finished", "--quiet"),
                   env=env, cwd=REPO_ROOT, timeout=600)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "finished" / "thing.glb").is_file()


def test_serve_refuses_a_non_loopback_bind_without_keys_before_loading_a_model(tmp_path, capsys):
    # the data folder lies under a file: were the refusal to come after the folder lock, the run would stop there
    # (with another message) instead of loading the model and serving in this process
    (tmp_path / "a file").write_text("")
    code = iso3d(["serve", "--model", "tiny", "--bind", "tcp://0.0.0.0:5555", "--data", str(tmp_path / "a file" / "data")])
    one_line_error(code, capsys, "binding tcp://0.0.0.0:5555", "CURVE")


def test_serve_with_a_data_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    (tmp_path / "a file").write_text("")
    code = iso3d(["serve", "--model", "tiny", "--data", str(tmp_path / "a file" / "data")])
    one_line_error(code, capsys, "cannot use the data folder", "Not a directory", "--data")
