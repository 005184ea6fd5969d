"""GPU memory plan (backend.nerf.memory) on CPU-sized settings: the refusal names a preset that fits, a run over its
plain budget evaluates the field in checkpointed chunks with the plain evaluation's values and gradients."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from backend.events import Done, Failed
from backend.models.multiview_model import build_tiny_model
from backend.nerf.field import RadianceField
from backend.models.vae import checkpointed_moments, encode_latents, encoder_moments
from backend.nerf.memory import GIB, SAMPLES_PER_RAY_FIRST_PHASE, SAMPLES_PER_RAY_LATER_PHASE, SLACK, plan_memory, \
    vae_bytes_per_view
from backend.nerf.presets import preset
from backend.nerf.renderer import evaluate_samples
from backend.nerf.shading import Lighting
from backend.nerf.trainer import SDSTrainer, generate
from tests.helpers.targets import small_config

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    return build_tiny_model(seed=0)


def test_checkpointed_chunks_equal_the_plain_evaluation():
    config = small_config().field
    torch.manual_seed(0)
    field = RadianceField(config)
    points = (torch.rand(300, 3) - 0.5) * 0.9
    directions = torch.nn.functional.normalize(torch.randn(300, 3), dim=-1)
    light = torch.full((300, 3), 1.5)
    lighting = Lighting("diffuse", 0.4, None)
    results = []
    for checkpointed in (False, True):
        field.zero_grad()
        density, colour, normals, orientation = evaluate_samples(field, points, directions, light, lighting, True,
                                                                 checkpointed, chunk=64)
        (density.sum() + colour.square().sum() + orientation.sum() + normals[:, 0].sum()).backward()
        results.append(([density, colour, normals, orientation], [p.grad.clone() for p in field.parameters()]))
    (values, grads), (values_ckpt, grads_ckpt) = results
    # The same float32 operations on the same samples (chunks of 64 instead of one batch of 300): equal up to
    # the MLP's matmul blocking, far below 1e-5 relative.
    for plain, chunked in zip(values + grads, values_ckpt + grads_ckpt):
        torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-6)


def test_plan_grows_with_the_render_size_and_a_small_cap_sets_a_sample_budget(model):
    small = small_config()
    large = small_config(phases__resolution_after=64)
    plan_small, plan_large = plan_memory(small, model, CPU), plan_memory(large, model, CPU)
    assert plan_small.cap_gib is None and plan_small.phase(2).sample_budget is None  # CPU, no cap: nothing limited
    assert (plan_small.phase(2).rays, plan_large.phase(2).rays) == (4 * 24**2, 4 * 64**2)
    assert plan_large.need_gib(False) > plan_small.need_gib(False)
    # kept under checkpointing: points and outputs, far less than the hash grid's intermediates
    assert plan_small.bytes_per_sample_checkpointed < plan_small.bytes_per_sample / 5
    capped = small_config(run__max_gpu_memory=round((plan_small.need_gib(True) + plan_small.need_gib(False)) / 2, 4))
    plan = plan_memory(capped, model, CPU)
    assert plan.fits and all(phase.sample_budget is not None for phase in plan.phases)


def test_a_plans_measurements_are_kept_for_the_process_and_taken_again_when_what_they_measure_changes(model):
    """A warm service's jobs plan without measuring again (memory_measure keeps each measurement per process, keyed
    by what it depends on); new render shapes or a cap redo only the plan's arithmetic; another field is measured."""
    from backend.nerf import memory_measure

    before = set(memory_measure._MEASURED)
    first = plan_memory(small_config(field__mlp_width=24), model, CPU)  # a field no other test measures
    measured = set(memory_measure._MEASURED) - before
    assert sorted(key[3] for key in measured if key[0] == "samples") == [False, True]  # plain and checkpointed
    # each measurement's host time is on the plan (on a CPU no allocator measurement of the VAE at a phase's batch)
    assert set(first.measure_ms) == {"vae_saved_tensors", "vae_checkpointed_saved_tensors", "field",
                                     "field_checkpointed"}
    assert first.measure_ms["field"] > 0 and first.parts()["measure_ms"] == first.measure_ms
    # the same field and encoder, larger phase-2 renders and a cap: nothing measured again, the plan redone
    capped = small_config(field__mlp_width=24, phases__resolution_after=48,
                          run__max_gpu_memory=round(first.need_gib(True) * 4, 4))
    again = plan_memory(capped, model, CPU)
    assert set(memory_measure._MEASURED) - before == measured
    assert (again.bytes_per_sample, again.bytes_per_sample_checkpointed) == (first.bytes_per_sample,
                                                                              first.bytes_per_sample_checkpointed)
    assert again.phase(2).rays == 4 * 48**2 > first.phase(2).rays and again.cap_gib is not None
    assert all(phase.sample_budget is not None for phase in again.phases)  # the cap's budgets, worked out anew
    # a wider MLP: a field of other shapes, measured anew (and holding more a sample)
    wider = plan_memory(small_config(field__mlp_width=48), model, CPU)
    new = set(memory_measure._MEASURED) - before - measured
    assert sorted(key[3] for key in new if key[0] == "samples") == [False, True]
    assert wider.bytes_per_sample > first.bytes_per_sample


def test_the_estimate_is_per_phase_each_with_its_own_views_rays_and_samples_per_ray(model):
    # phase 1: 2 objects x 4 views at 16^2 (8 VAE images, few rays); phase 2: 1 x 4 at 48^2 (4 images, many rays)
    config = small_config(phases__objects_before=2, phases__resolution_before=16, phases__resolution_after=48)
    plan = plan_memory(config, model, CPU)
    first, second = plan.phase(1), plan.phase(2)
    assert (first.views, first.rays, second.views, second.rays) == (8, 8 * 16**2, 4, 4 * 48**2)
    # the run's first phase starts from the initial blob (the measured maximum), the later one from a pruned grid
    assert first.expected_samples == first.rays * SAMPLES_PER_RAY_FIRST_PHASE
    assert second.expected_samples == second.rays * SAMPLES_PER_RAY_LATER_PHASE
    needs = [plan.phase_need_gib(phase, None, False) for phase in plan.phases]
    assert plan.need_gib(False) == max(needs) == pytest.approx(plan.estimate_gib)
    # the old plan's sum: the largest phase's VAE images with the largest phase's rays, at the first phase's
    # samples per ray; the per-phase estimate is below it
    combined = SLACK * (plan.base_gib + 8 * first.vae_gib_per_view
                        + second.rays * SAMPLES_PER_RAY_FIRST_PHASE * plan.bytes_per_sample / GIB)
    assert plan.estimate_gib < combined
    # a run with no first phase (switch at 0) starts its only phase from the blob
    only = plan_memory(small_config(phases__switch_at=0.0, phases__resolution_after=48), model, CPU)
    assert [p.number for p in only.phases] == [2]
    assert only.phase(2).expected_samples == second.rays * SAMPLES_PER_RAY_FIRST_PHASE


def test_the_vae_encoder_checkpointed_gives_the_plain_gradients_and_keeps_far_less(model):
    vae = model.vae
    torch.manual_seed(0)
    source = torch.rand(4, 3, 64, 64) * 2 - 1
    weights = torch.randn(4, 4, 8, 8)
    results = []
    for moments in (None, checkpointed_moments(partial(encoder_moments, vae), 1)):
        images = source.clone().requires_grad_(True)
        latents = encode_latents(vae, images, torch.Generator().manual_seed(3), moments)
        (latents * weights).sum().backward()
        results.append((latents.detach(), images.grad))
    (latents, grad), (latents_ckpt, grad_ckpt) = results
    # the same float32 convolutions on one image at a time instead of four (the library's blocking may differ
    # with the batch): equal up to rounding, far below 1e-5 relative
    torch.testing.assert_close(latents_ckpt, latents, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_ckpt, grad, rtol=1e-5, atol=1e-6)
    plain = vae_bytes_per_view(vae, 64, CPU, None, checkpointed=False)
    kept = vae_bytes_per_view(vae, 64, CPU, None, checkpointed=True)
    assert kept < plain / 20


# slow: two whole runs (~7 s); the default run keeps the capped step's equality test
@pytest.mark.slow
def test_a_capped_run_checkpoints_the_vae_and_the_field_to_the_end_and_matches_the_uncapped_run(model, tmp_path):
    context = torch.zeros(1, 1, model.unet.config.cross_attention_dim)
    need = plan_memory(small_config(steps=4), model, CPU).need_gib(True)
    runs = []
    for cap in (0.0, round(need * 1.02, 5)):
        config = small_config(steps=4, run__max_gpu_memory=cap, mesh__density_threshold=0.5)
        trainer = RecordingTrainer(config, model, context, tmp_path / f"cap{cap}", CPU)
        events = list(trainer.run())
        assert isinstance(events[-1], Done), events[-1]
        runs.append(trainer)
    plain, capped = runs
    assert plain.memory is None and all(r["vae_chunk"] is None for r in plain.records)
    # under the cap: the VAE encoder in one-view chunks, and steps with more samples than the budget in chunks
    assert all(r["vae_chunk"] == 1 for r in capped.records)
    assert any(r["samples"] > r["budget"] for r in capped.records)
    # The same steps from the same seed: the same renders, latents and losses up to float32 rounding of the
    # chunked MLP and convolutions (1e-6 relative a step), which the optimiser carries on: 1e-4 relative.
    for uncapped, chunked in zip(plain.records, capped.records):
        assert chunked["loss"] == pytest.approx(uncapped["loss"], rel=1e-4)
    # The first step's gradients: hash-table entries are sums over the samples that touch them, added in another
    # order when the samples come in chunks, so an entry near zero differs by float32 rounding of its largest
    # terms: absolute tolerance 1e-5 of the largest gradient.
    for name, gradient in plain.records[0]["grads"].items():
        torch.testing.assert_close(capped.records[0]["grads"][name], gradient, rtol=1e-4,
                                   atol=1e-5 * float(gradient.abs().max()))


class RecordingTrainer(SDSTrainer):
    """The real trainer, recording each step's loss, samples and memory settings (and the first step's gradients)."""

    records: list

    def train_step(self):
        losses = super().train_step()
        record = {"loss": losses["loss"], "samples": self.renderer.last_sample_count,
                  "budget": self.renderer.sample_budget, "vae_chunk": self.vae_encoder.checkpoint_views}
        if not getattr(self, "records", None):
            self.records = []
            record["grads"] = {name: p.grad.clone() for name, p in self.field.named_parameters()}
        self.records.append(record)
        return losses


def test_a_capped_step_checkpoints_and_matches_the_uncapped_step(model):
    context = torch.zeros(1, 1, model.unet.config.cross_attention_dim)
    base = small_config(steps=4)
    need = plan_memory(base, model, CPU)
    losses = []
    for cap in (0.0, round((need.need_gib(True) + need.need_gib(False)) / 2, 4)):
        config = small_config(steps=4, run__max_gpu_memory=cap)
        trainer = SDSTrainer(config, model, context, "unused", CPU)
        if cap:
            trainer.renderer.sample_budget = 4000  # below a step's samples: several checkpointed chunks
        losses.append(trainer.train_step()["loss"])
        assert trainer.renderer.last_sample_count > (4000 if cap else 0)
    # one step from the same seed: the same renders up to float32 rounding of the chunked MLP
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


def test_a_run_that_cannot_fit_is_refused_at_the_start_naming_a_preset_that_fits(model, tmp_path):
    def need(name):
        config = preset(name)
        config.run.max_gpu_memory = 1000.0
        return plan_memory(config, model, CPU).need_gib(True)

    reference, draft = need("reference"), need("draft")
    assert draft < reference
    config = preset("reference")
    config.run.max_gpu_memory = round((draft + reference) / 2, 3)
    image = torch.zeros(1, 3, 256, 256)
    events = list(generate(model, config, tmp_path / "job", image=image, device=CPU))
    assert len(events) == 1 and isinstance(events[0], Failed) and events[0].code == "not_enough_memory"
    message = events[0].message
    assert "GiB" in message and "preset fits" in message and "'reference'" not in message.split("fits")[0][-30:]
    assert not (tmp_path / "job" / "checkpoint.pt").exists()  # refused before anything was written


def test_a_cap_below_every_preset_says_so(model, tmp_path):
    config = small_config(run__max_gpu_memory=1e-4)
    events = list(generate(model, config, tmp_path / "job", image=torch.zeros(1, 3, 256, 256), device=CPU))
    assert isinstance(events[-1], Failed) and events[-1].code == "not_enough_memory"
    assert "no preset fits" in events[-1].message


def test_cli_refuses_a_negative_cap_in_one_line(tmp_path, capsys):
    from backend.cli import main

    code = main(["generate", "examples/example.png", "--model", "tiny", "--device", "cpu", "--max-gpu-memory", "-1",
                 "--out", str(tmp_path / "a.glb"), "--quiet"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "max_gpu_memory" in error and len(error.splitlines()) == 1


# slow: plans the published-size model on the CPU (~8 s); the default run keeps the plan's tests at tiny sizes
@pytest.mark.slow
def test_the_published_size_estimates_sit_above_the_measured_h200_peaks_by_at_most_a_third():
    from tests.helpers.bench_scripts import bench_script

    with bench_script("memory_plan") as script:
        published = script.published_model_for_planning()
    # bench/results/generate_h200_2026-12-02_baseline.json: peaks of the 600-step trajectories on one H200
    for name, measured in (("fast", 14.73), ("reference", 17.78)):
        estimate = plan_memory(preset(name), published, CPU, planned_for="cuda").estimate_gib
        # above the peak (an estimate below it would let a run reach an OOM halfway), by 10-25% with the VAE
        # measured under CUDA's float16 autocast; here it is measured in float32 (about 1.2x the VAE's bytes)
        assert measured * 1.05 < estimate < measured * 1.35, (name, estimate)


def test_the_measurements_collections_scan_only_what_was_made_while_measuring():
    """backend.nerf.memory_measure.measuring_collections: alive objects frozen (one full collection first), so a
    measurement's collections skip them; garbage made inside is still collected; the state is restored at exit,
    and a caller's freeze (the service's, after each job) is kept."""
    import gc
    import weakref

    from backend.nerf.memory_measure import measuring_collections

    class Node:
        pass

    frozen_by_the_suite = gc.get_freeze_count()  # tests/conftest.py freezes what collection imported
    gc.unfreeze()
    try:
        alive = [Node() for _ in range(1000)]
        with measuring_collections():
            assert gc.get_freeze_count() >= len(alive)  # what was alive is out of the collections' way
            cycle = Node()
            cycle.me = cycle  # garbage only the cyclic collector frees
            dead = weakref.ref(cycle)
            del cycle
            assert dead() is not None
            gc.collect()
            assert dead() is None  # made while measuring: collected
        assert gc.get_freeze_count() == 0  # as it was
        gc.freeze()  # a caller that freezes (the service's job queue, the suite)
        frozen = gc.get_freeze_count()
        with measuring_collections():
            pass
        assert gc.get_freeze_count() == frozen  # the caller's freeze kept
        del alive
    finally:
        if frozen_by_the_suite:
            gc.freeze()
