"""The CLIP image encoder reproduces the reference FrozenOpenCLIPImageEmbedder (preprocessing and embedding)."""

from __future__ import annotations

import torch

from backend.models.checkpoints import CLIP_VISUAL_PREFIX, load_into, strip_prefix
from backend.models.image_encoder import CLIPImageEncoder
from tests.helpers.golden import relative_error


def build_golden_encoder(load_golden):
    meta, tensors = load_golden("clip_image_embedder_small")
    with torch.device("meta"):
        encoder = CLIPImageEncoder(meta["open_clip_model_config"])
    load_into(encoder.visual, strip_prefix(tensors, CLIP_VISUAL_PREFIX), "image encoder")
    return encoder.eval(), tensors


def test_preprocessing_matches_reference(load_golden):
    encoder, tensors = build_golden_encoder(load_golden)
    preprocessed = encoder.preprocess(tensors["io.image"])
    assert preprocessed.shape == (1, 3, 224, 224)
    assert (preprocessed - tensors["io.preprocessed"]).abs().max().item() < 1e-5


def test_embedding_matches_reference(load_golden):
    encoder, tensors = build_golden_encoder(load_golden)
    with torch.no_grad():
        embedding = encoder(tensors["io.image"])
    assert embedding.shape == (1, 1, 16)
    assert relative_error(embedding, tensors["io.embedding"]) < 1e-5
    # pooled and projected, not L2-normalised
    assert abs(embedding.norm().item() - 1.0) > 0.1


def test_unconditional_context_is_zeros(load_golden):
    encoder, _ = build_golden_encoder(load_golden)
    uncond = encoder.unconditional(batch=2)
    assert uncond.shape == (2, 1, 16) and not uncond.any()
