"""Where the weights come from: explicit path, environment variable, Hugging Face cache, download refusal."""

from __future__ import annotations

import pytest

from backend.models.weights import HF_FILENAME, WeightsNotFound, find_checkpoint


def test_explicit_path_wins(tmp_path, monkeypatch):
    explicit = tmp_path / "mine.ckpt"
    explicit.write_bytes(b"x")
    other = tmp_path / "env.ckpt"
    other.write_bytes(b"y")
    monkeypatch.setenv("ISO3D_CHECKPOINT", str(other))
    assert find_checkpoint(explicit) == explicit
    assert find_checkpoint(None) == other


def test_missing_explicit_path_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsNotFound, match="does not exist"):
        find_checkpoint(tmp_path / "nope.ckpt")


def test_hugging_face_cache_is_used(tmp_path, monkeypatch):
    """A checkpoint in the standard Hugging Face cache layout is found without any network."""
    monkeypatch.delenv("ISO3D_CHECKPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "models--pkunliu--Isotropic3D"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / HF_FILENAME).write_bytes(b"weights")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert find_checkpoint(None) == snapshot / HF_FILENAME


def test_offline_without_weights_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("ISO3D_CHECKPOINT", raising=False)
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFound, match="--checkpoint PATH"):
        find_checkpoint(None, allow_download=False)
