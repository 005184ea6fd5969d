"""backend.nerf.grid_sampling.densities_until_opaque on the CPU: querying the density in rounds along the rays,
only of rays still transparent, leaves the visible samples (nerfacc's rule: transmittance before the sample at
least ``early_stop_eps``, alpha at least the threshold) exactly those of querying every marched sample, and skips
the samples behind the point where a ray turned opaque. The CUDA test (test_grid_sampling_cuda.py) checks the same
against nerfacc's own sampler on a real traversal."""

from __future__ import annotations

import math

import pytest
import torch

from backend.nerf.grid_sampling import densities_until_opaque

EPS = 1e-4
STEP = 0.01


def _packed_rays(densities_per_ray: list[list[float]]):
    """Packed samples front to back: t_starts, t_ends, ray_indices, first positions [R], and the densities of every
    sample (what a full query returns)."""
    ray_indices, sigmas, first = [], [], []
    for ray, values in enumerate(densities_per_ray):
        first.append(len(sigmas))
        ray_indices += [ray] * len(values)
        sigmas += values
    count = len(sigmas)
    t_starts = torch.arange(count, dtype=torch.float32) * STEP  # lengths only matter through t_ends - t_starts
    return (t_starts, t_starts + STEP, torch.tensor(ray_indices, dtype=torch.int64),
            torch.tensor(first, dtype=torch.int64), torch.tensor(sigmas, dtype=torch.float32))


def _visible(sigmas, t_starts, t_ends, ray_indices, alpha_threshold):
    """nerfacc's rule, written out per ray: transmittance before each sample (exclusive sum) and alpha."""
    depth = sigmas * (t_ends - t_starts)
    visible = torch.zeros_like(sigmas, dtype=torch.bool)
    for ray in ray_indices.unique():
        where = (ray_indices == ray).nonzero().squeeze(-1)
        before = torch.cumsum(depth[where], 0) - depth[where]
        transmittance = torch.exp(-before)
        alpha = 1.0 - torch.exp(-depth[where])
        visible[where] = (transmittance >= EPS) & (alpha >= alpha_threshold)
    return visible


def _rays() -> list[list[float]]:
    """Rays that turn opaque at different depths (density 400 over steps of 0.01: depth 4 a sample, so ~3 samples
    reach transmittance 1e-4), that never do, and of different lengths, with empty space in front."""
    rays = []
    for empty_in_front in (0, 2, 5, 13, 40):
        rays.append([0.0] * empty_in_front + [400.0] * 30)  # opaque after empty_in_front + 3 samples
    rays.append([0.5] * 90)  # thin: transmittance stays above 1e-4 all the way
    rays.append([3.0])  # one sample
    rays.append([0.0] * 7 + [80.0, 0.0, 200.0] + [50.0] * 60)  # opaque in the middle of the second round
    return rays


@pytest.mark.parametrize("alpha_threshold", [0.01, 0.0])
@pytest.mark.parametrize("window", [1, 3, 8, 32])
def test_the_visible_samples_are_those_of_querying_every_sample(window, alpha_threshold):
    t_starts, t_ends, ray_indices, first, every = _packed_rays(_rays())
    asked = []

    def density(starts, ends, rays):
        asked.append(rays.shape[0])
        positions = (starts / STEP).round().long()  # the sample's packed position, from its start
        return every[positions]

    sigmas, queried = densities_until_opaque(t_starts, t_ends, ray_indices, first, density, EPS, window)
    assert queried == sum(asked) and len(asked) >= 1
    expected = _visible(every, t_starts, t_ends, ray_indices, alpha_threshold)
    assert torch.equal(_visible(sigmas, t_starts, t_ends, ray_indices, alpha_threshold), expected)
    asked_at = sigmas != 0
    assert torch.equal(sigmas[asked_at], every[asked_at])  # what was queried is the density itself
    if window < 32:  # rounds of 1, 3 or 8 stop the opaque rays well before their 30 dense samples end
        assert queried < every.numel()
        assert len(asked) > 1
    # a sample left unqueried lies where its ray is opaque already: invisible whatever its density
    skipped = (~asked_at) & (every != 0)
    assert not (skipped & expected).any()


def test_rays_are_queried_in_doubling_rounds_only_while_transparent():
    # one ray opaque from its 4th sample on (density 400: depth 4 a sample), one thin ray of 20 samples
    t_starts, t_ends, ray_indices, first, every = _packed_rays([[0.0] * 3 + [400.0] * 17, [0.5] * 20])
    asked = []

    def density(starts, ends, rays):
        asked.append(rays.tolist())
        return every[(starts / STEP).round().long()]

    sigmas, queried = densities_until_opaque(t_starts, t_ends, ray_indices, first, density, EPS, window=2)
    # rounds of 2, 4, 8, 16 samples: the first ray is opaque after 6 (depth 12 > -ln 1e-4 = 9.2) and stops there,
    # the thin ray goes on to its end
    assert asked == [[0, 0, 1, 1], [0] * 4 + [1] * 4, [1] * 8, [1] * 6]
    assert queried == 4 + 8 + 8 + 6
    assert math.isclose(float(sigmas[:20].sum()), 400.0 * 3)


@pytest.mark.parametrize("window, eps", [(0, EPS), (8, 0.0)])
def test_without_a_window_or_early_stop_every_sample_is_queried_once(window, eps):
    t_starts, t_ends, ray_indices, first, every = _packed_rays(_rays())
    asked = []

    def density(starts, ends, rays):
        asked.append(rays.shape[0])
        return every[(starts / STEP).round().long()]

    sigmas, queried = densities_until_opaque(t_starts, t_ends, ray_indices, first, density, eps, window)
    assert asked == [every.numel()] and queried == every.numel()
    assert torch.equal(sigmas, every)
