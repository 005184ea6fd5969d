"""The VAE (diffusers AutoencoderKL through diffusers' LDM converter) reproduces the reference autoencoder."""

from __future__ import annotations

import pytest
import torch

from backend.models.checkpoints import VAE_PREFIX, load_vae_ldm_state_dict, strip_prefix, vae_ldm_state_dict
from backend.models.vae import build_vae, encode_latents
from tests.helpers.golden import relative_error


@pytest.fixture(scope="module")
def golden_vae(load_golden):
    meta, tensors = load_golden("ldm_vae_small")
    with torch.device("meta"):
        vae = build_vae(meta["vae_config"])
    load_vae_ldm_state_dict(vae, strip_prefix(tensors, VAE_PREFIX))
    return vae.eval(), tensors


def test_encoder_posterior_matches_reference(golden_vae):
    vae, tensors = golden_vae
    with torch.no_grad():
        posterior = vae.encode(tensors["io.x"]).latent_dist
    assert relative_error(posterior.mean, tensors["io.posterior_mean"]) < 1e-5
    assert relative_error(posterior.logvar, tensors["io.posterior_logvar"]) < 1e-5


def test_decoder_matches_reference(golden_vae):
    vae, tensors = golden_vae
    with torch.no_grad():
        decoded = vae.decode(tensors["io.z"]).sample
    assert relative_error(decoded, tensors["io.decoded"]) < 1e-5


def test_encode_takes_a_scaled_posterior_sample(golden_vae):
    """z = (mean + std * noise) * 0.18215 with the generator's noise, not the posterior mode."""
    vae, tensors = golden_vae
    with torch.no_grad():
        z = encode_latents(vae, tensors["io.x"], generator=torch.Generator().manual_seed(3))
    noise = torch.randn(tensors["io.posterior_mean"].shape, generator=torch.Generator().manual_seed(3))
    std = torch.exp(0.5 * tensors["io.posterior_logvar"])
    expected = (tensors["io.posterior_mean"] + std * noise) * 0.18215
    assert relative_error(z, expected) < 1e-5
    assert relative_error(z, tensors["io.posterior_mean"] * 0.18215) > 1e-2


def test_saves_back_the_reference_names_and_values(golden_vae):
    vae, tensors = golden_vae
    original = strip_prefix(tensors, VAE_PREFIX)
    saved = vae_ldm_state_dict(vae)
    assert set(saved) == set(original)
    for key, value in original.items():
        assert saved[key].shape == value.shape, key
        assert torch.equal(saved[key], value), key
