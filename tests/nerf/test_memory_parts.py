"""The memory plan's arithmetic (backend.nerf.memory, backend.nerf.memory_measure): a fixed and a per-unit part
separated from measurements at two or more counts, bounding each from above; the field's own peak counted beside
the base and its kept bytes beside the guidance; a cap that the field's peak binds keeps the VAE encoder plain."""

from __future__ import annotations

import pytest
import torch

from backend.nerf.field import RadianceField
from backend.nerf.memory import GIB, MIN_SAMPLE_CHUNK, SLACK, MemoryPlan, PhasePlan, fit_under_cap
from backend.nerf.memory_measure import parameter_storages, saved_bytes, separate
from backend.nerf.renderer import evaluate_samples
from backend.nerf.shading import Lighting
from tests.helpers.targets import small_config


def test_two_measurements_separate_a_fixed_and_a_per_unit_part():
    # 1 MiB fixed + 300 B a sample, measured at 65,536 and 262,144 samples
    fixed, per_unit = separate([(1 << 16, 2**20 + 300 * (1 << 16)), (1 << 18, 2**20 + 300 * (1 << 18))])
    assert (fixed, per_unit) == (pytest.approx(2**20), pytest.approx(300.0))
    # a middle measurement above the line raises the fixed part until it lies on it: every point bounded
    points = [(100, 1_000.0), (200, 1_700.0), (300, 2_000.0)]
    fixed, per_unit = separate(points)
    assert per_unit == pytest.approx(5.0) and fixed == pytest.approx(700.0)
    assert all(fixed + per_unit * n >= b for n, b in points)
    # a negative intercept (a larger count keeping proportionally more) becomes the proportional bound
    fixed, per_unit = separate([(100, 100.0), (200, 400.0)])
    assert (fixed, per_unit) == (0.0, 2.0)
    # a negative slope (rounding of blocks at nearby counts) becomes the flat bound
    assert separate([(100, 500.0), (200, 400.0)]) == (500.0, 0.0)
    with pytest.raises(ValueError, match="two different"):
        separate([(100, 500.0), (100, 400.0)])


def test_the_separated_line_from_two_real_measurements_bounds_a_third_count():
    torch.manual_seed(0)
    field = RadianceField(small_config().field)
    lighting = Lighting("diffuse", 0.5, None)
    exclude = parameter_storages(field)
    generator = torch.Generator().manual_seed(0)

    def measure(count: int) -> int:
        points = torch.rand(count, 3, generator=generator) * 0.8 - 0.4
        directions = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator), dim=-1)
        light = torch.ones(count, 3)

        def evaluate():
            density, colour, _, orientation = evaluate_samples(field, points, directions, light, lighting, True)
            return density.sum() + colour.sum() + orientation.sum()

        return saved_bytes(evaluate, exclude)

    fixed, per_unit = separate([(256, measure(256)), (1024, measure(1024))])
    middle = measure(640)
    assert per_unit > 100  # the hash grid's corners, the MLPs' activations: hundreds of bytes a sample
    # Saved tensors are whole storages of sizes linear in the count: the line meets the middle count exactly, up
    # to storages that round to a fixed size (none here): 1% either way.
    assert middle <= fixed + per_unit * 640 <= middle * 1.01


def _phase(expected: int = 1_000_000) -> PhasePlan:
    # 8 views: 0.1 GiB a view plain, 0.005 kept under checkpointing, 0.3 while an eager chunk is recomputed
    return PhasePlan(1, 10, 8, expected // 40, expected, 0.1, 0.005, vae_eager_gib_per_view=0.3)


def test_the_field_peak_counts_beside_the_base_and_its_kept_bytes_beside_the_guidance():
    phase = _phase()
    plan = MemoryPlan(None, 2.0, 400.0, 100.0, [phase], unet_reserve_gib=1.5, sample_peak_bytes=900.0,
                      sample_fixed_bytes=2**20)
    beside = 0.8 + 1.5 + (1_000_000 * 400.0 + 2**20) / GIB
    alone = (1_000_000 * 900.0 + 2**20) / GIB
    assert beside > alone and plan.estimate_gib == pytest.approx(SLACK * (2.0 + beside))
    # a field whose own peak exceeds what it keeps beside the guidance: its peak is the need
    heavy = MemoryPlan(None, 2.0, 400.0, 100.0, [_phase(10_000_000)], unet_reserve_gib=1.5, sample_peak_bytes=900.0)
    assert heavy.estimate_gib == pytest.approx(SLACK * (2.0 + 10_000_000 * 900.0 / GIB))
    # without a peak figure (saved tensors: a CPU) the peak is the kept bytes: the sum of every part
    summed = MemoryPlan(None, 2.0, 400.0, 100.0, [_phase()], unet_reserve_gib=1.5)
    assert summed.estimate_gib == pytest.approx(SLACK * (2.0 + 0.8 + 1.5 + 1_000_000 * 400.0 / GIB))
    # the eager chunk recomputed under checkpointing, beside every view's kept moments
    assert phase.vae_gib(2) == pytest.approx(8 * 0.005 + 2 * 0.3) and phase.vae_gib(None) == pytest.approx(0.8)


def test_a_cap_the_field_peak_binds_keeps_the_vae_plain_and_a_budget_under_the_cap():
    # 10 M samples: kept beside the guidance 2 + 0.8 + 1.5 + 3.7 GiB, alone 2 + 8.4 GiB: the field's peak binds
    plan = MemoryPlan(9.0, 2.0, 400.0, 100.0, [_phase(10_000_000)], unet_reserve_gib=1.5, sample_peak_bytes=900.0)
    assert plan.need_gib(False) > 9.0 and plan.fits
    fit_under_cap(plan)
    (phase,) = plan.phases
    # checkpointing the VAE would lower only the guidance side: the encoder stays plain (compiled, faster)
    assert phase.vae_checkpoint_views is None
    assert MIN_SAMPLE_CHUNK < phase.sample_budget < phase.expected_samples
    assert plan.estimate_gib <= 9.0
    # one sample more a chunk than the budget would not fit at the peak bytes a sample (within int rounding)
    over = plan.step_gib(phase, None, phase.sample_budget + 200_000, phase.expected_samples)
    assert over > 9.0 * 0.999


def test_a_cap_the_vae_binds_checkpoints_it_only_as_far_as_the_samples_fit():
    # plain VAE 8 x 0.5 GiB: 1.1 x (2 + 4 + 1.5 + 0.37) GiB over an 8 GiB cap; in chunks of 4 views the VAE holds
    # 8 x 0.005 + 4 x 0.3 GiB (the eager encoder recomputed): 5.6 GiB, under it
    phase = PhasePlan(1, 10, 8, 25_000, 1_000_000, 0.5, 0.005, vae_eager_gib_per_view=0.3)
    plan = MemoryPlan(8.0, 2.0, 400.0, 100.0, [phase], unet_reserve_gib=1.5, sample_peak_bytes=900.0)
    fit_under_cap(plan)
    assert phase.vae_checkpoint_views == 4 and phase.sample_budget >= phase.expected_samples
    assert plan.estimate_gib <= 8.0


def test_the_least_need_takes_the_plain_encoder_where_it_holds_less_than_an_eager_chunk():
    # the compiled encoder 0.05 GiB a view (8 views: 0.4 GiB); one eager view recomputed holds 0.5 GiB alone
    phase = PhasePlan(1, 10, 8, 25_000, 1_000_000, 0.05, 0.005, vae_eager_gib_per_view=0.5)
    plan = MemoryPlan(None, 2.0, 400.0, 100.0, [phase], unet_reserve_gib=1.5)
    assert phase.vae_gib(None) < phase.vae_gib(1)
    assert plan.need_gib(True) == pytest.approx(plan.phase_need_gib(phase, None, True))
    plan.cap_gib = plan.need_gib(True) * 1.001
    fit_under_cap(plan)
    assert phase.vae_checkpoint_views is None and plan.estimate_gib <= plan.cap_gib


def test_a_graphed_encoder_counts_its_pool_beside_the_fields_own_peak():
    # 10 M samples, the field's own peak binding (2 + 8.4 GiB alone against 2 + 0.8 + 1.5 + 3.7 beside): a VAE
    # encoder replayed from CUDA graphs keeps its 0.8 GiB pool through the field's peak, a checkpointed one
    # (eager chunks, no graphs) does not
    plain = MemoryPlan(None, 2.0, 400.0, 100.0, [_phase(10_000_000)], unet_reserve_gib=1.5, sample_peak_bytes=900.0)
    graphed = MemoryPlan(None, 2.0, 400.0, 100.0, [_phase(10_000_000)], unet_reserve_gib=1.5, sample_peak_bytes=900.0,
                         vae_graphs=True)
    (phase,) = graphed.phases
    assert graphed.phase_need_gib(phase, None, False) == pytest.approx(
        plain.phase_need_gib(plain.phases[0], None, False) + SLACK * phase.vae_gib(None))
    assert graphed.phase_need_gib(phase, 2, False) == pytest.approx(plain.phase_need_gib(plain.phases[0], 2, False))
    # under a cap that the field's peak binds, the graphed encoder's pool would take the samples' room: the VAE is
    # checkpointed (eager chunks, no pool held), unlike the plain case above: its budget would not fit beside the pool
    graphed.cap_gib = 9.0
    fit_under_cap(graphed)
    assert phase.vae_checkpoint_views == 4
    assert graphed.step_gib(phase, None, phase.sample_budget, phase.expected_samples) > 9.0
    assert graphed.estimate_gib <= 9.0
