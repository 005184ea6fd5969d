"""The noise schedule buffers and the DDIM sampler schedule against the reference (golden/schedule.json)."""

from __future__ import annotations

import json

import pytest
import torch

from backend.models.schedule import SCHEDULE_BUFFER_NAMES, make_ddim_scheduler, schedule_buffers


@pytest.fixture(scope="module")
def golden(golden_dir):
    return json.loads((golden_dir / "schedule.json").read_text())


def test_buffers_match_reference(golden):
    assert sorted(SCHEDULE_BUFFER_NAMES) == sorted(golden["buffers_registered_persistent"])
    ours = schedule_buffers()
    for name in SCHEDULE_BUFFER_NAMES:
        expected = torch.tensor(golden["buffers_float32"][name], dtype=torch.float32)
        assert ours[name].dtype == torch.float32
        assert torch.allclose(ours[name], expected, rtol=1e-6, atol=1e-9), name


def test_ddim_timesteps_match_both_reference_samplers(golden):
    scheduler = make_ddim_scheduler()
    scheduler.set_timesteps(50)
    timesteps = scheduler.timesteps.tolist()
    assert timesteps == golden["ddim_sampler"]["sampling_order"]
    assert timesteps == golden["diffusers_ddim_scheduler_in_guidance"]["timesteps"]


def test_ddim_alphas_and_sigmas_match_ldm_sampler(golden):
    """diffusers' DDIM step with set_alpha_to_one=False uses the same alphas/sigmas as LDM's DDIMSampler."""
    reference = golden["ddim_sampler"]
    scheduler = make_ddim_scheduler()
    scheduler.set_timesteps(50)
    ascending = sorted(scheduler.timesteps.tolist())
    alphas = scheduler.alphas_cumprod
    for index, t in enumerate(ascending):
        previous = t - 1000 // 50
        alpha_prev = alphas[previous] if previous >= 0 else scheduler.final_alpha_cumprod
        assert alphas[t].item() == pytest.approx(reference["ddim_alphas"][index], rel=1e-6)
        assert float(alpha_prev) == pytest.approx(reference["ddim_alphas_prev"][index], rel=1e-6)
        sigma = (scheduler._get_variance(t, previous) ** 0.5).item()
        assert sigma == pytest.approx(reference["ddim_sigmas_eta1"][index], rel=1e-5, abs=1e-7)
