"""bench/generate.py runs its tiny configuration on CPU (so it cannot rot) and writes the results file."""

from __future__ import annotations

import json

import pytest
import torch

from backend.nerf.field import RadianceField
from backend.nerf.memory import plan_memory
from backend.nerf.presets import preset, set_option
from backend.profiling import compiled_cache_entries
from tests.helpers.bench_scripts import bench_script


@pytest.fixture(scope="module")
def bench():
    with bench_script("generate") as module:
        yield module


# slow: a whole tiny trajectory with its floor (~7 s); .ci/run runs it with the slow tests
@pytest.mark.slow
def test_trajectory_benchmark_tiny_cpu_writes_every_figure(bench, tmp_path, tiny_model):
    out = tmp_path / "generate_cpu.json"
    # one intermediate mesh, one preview, one checkpoint: every part of the run, each once (cheap on a busy CPU)
    periods = ["--set", "run.mesh_every=2", "--set", "run.views_every=4", "--set", "run.checkpoint_every=4"]
    # under a memory cap just above what the run needs with everything checkpointed (--caps, as on a GPU)
    config = preset("tiny")
    config.run.steps = 4
    for key, value in bench.TINY_SETTINGS.items():
        set_option(config, key, value)
    cap = round(plan_memory(config, tiny_model, "cpu").need_gib(True) * 1.02, 5)
    entries_before = compiled_cache_entries({"with_normals": RadianceField._evaluate_with_normals,
                                             "without_normals": RadianceField._evaluate})
    assert bench.main(["--tiny", "--device", "cpu", "--steps", "4", "--floor-repeats", "1", "--out", str(out),
                       "--caps", f"tiny={cap}", "--profile-steps", "1", "--profile-phase", "1", "--chamfer-samples", "5000",
                       "--host-profile", "final_mesh", *periods]) == 0
    results = json.loads(out.read_text())
    assert results["gpu"] == "cpu"
    (run,) = results["presets"]
    assert run["preset"] == "tiny" and run["steps"] == 4 and run["switch_step"] == 2
    assert run["memory_cap_gib"] == round(cap, 2) and run["memory_estimate_gib"] <= run["memory_cap_gib"] + 0.01
    for phase in (1, 2):  # the VAE encoder in one-view chunks, the field in chunks on every step (CPU-sized cap)
        assert run[f"phase{phase}_vae_checkpoint_views"] == 1 and run[f"phase{phase}_checkpointed_steps"] == 2
    for key in ("wall_s_cold", "phase1_step_ms_p50", "phase2_step_ms_p50", "phase2_step_ms_p90", "floor_ms",
                "samples_per_step_p50", "chamfer", "wall_s_full_estimate"):
        assert run[key] is not None and run[key] > 0, key
    assert run["phase2_step_ms_p90"] >= run["phase2_step_ms_p50"]
    # the process's age at the run's end (this pytest process here): at least the model's build and the run
    assert run["process_wall_s"] >= run["wall_s"] + results["model_setup_s"] - 0.02  # 10 ms clock ticks, rounding
    # the compiled field's entries: none added on the CPU, where the field runs as plain torch (other tests in this
    # process may have compiled it)
    assert run["field_compiled_entries"] == entries_before
    for phase, steps in ((1, {0, 1}), (2, {2, 3})):  # the slowest steps, slowest first, each of its own phase
        slowest = run[f"phase{phase}_slowest_steps"]
        assert 1 <= len(slowest) <= 2 and {row["step"] for row in slowest} <= steps, slowest
        assert [row["ms"] for row in slowest] == sorted((row["ms"] for row in slowest), reverse=True)
        assert slowest[0]["ms"] >= run[f"phase{phase}_step_ms_p50"] and all(row["samples"] > 0 for row in slowest)
        assert all(set(row["after"]) <= {"setup", "views", "mesh", "checkpoint", "profiler"} for row in slowest)
        # nothing is compiled on the CPU (the field and the models run as plain torch): no step traced a graph
        assert all(row["graphs_compiled"] == 0 for row in slowest)
        assert run[f"phase{phase}_graphs_compiled_after_first_steps"] == 0
    for phase in (1, 2):  # the CPU renderer samples without nerfacc's march: no march to count, no wait in it
        assert run[f"phase{phase}_marched_per_step_p50"] == 0
        assert run[f"phase{phase}_host_wait_ms_p50"] == 0
        assert 0 < run[f"phase{phase}_host_work_ms_p50"] <= run[f"phase{phase}_host_ms_p50"] + 0.01
        # the host's time by region: the step's regions in the trainer's order, then the rest of the step; each a
        # p50 over steps, so their sum is near the step's host p50 but not equal to it
        by_region = run[f"phase{phase}_host_ms_by_region_p50"]
        every_step = [name for name in by_region if name != "grid_update"]  # the grid: refreshed on some steps
        assert every_step[:7] == ["render.sampling", "render.field", "render.compositing", "guidance.encode",
                                  "guidance.unet", "backward", "optimizer"], by_region
        assert list(by_region)[-1] == "other" and all(ms >= 0 for ms in by_region.values()), by_region
        assert by_region["render.field"] > 0 and by_region["backward"] > 0
        assert max(by_region.values()) <= run[f"phase{phase}_host_ms_p50"] * 2, by_region
    # the floor of each phase (phase 1 guides 2 objects' views, phase 2 one's) and of the preset's 30 steps
    assert run["floor_phase1_ms"] == pytest.approx(run["floor_phase1_unet_ms"] + run["floor_phase1_vae_ms"], abs=0.011)
    assert run["floor_full_steps_s"] == pytest.approx((15 * run["floor_phase1_ms"] + 15 * run["floor_ms"]) / 1e3,
                                                      abs=0.006)
    assert run["full_steps_over_floor"] == pytest.approx(
        run["wall_s_full_estimate_parts"]["steps"] / run["floor_full_steps_s"], rel=0.01)
    # the work outside the steps by kind: each kind of the run timed, as often as it ran (the periods above)
    between, counts = run["between_steps_s"], run["between_steps_counts"]
    periodic, one_off = ("views", "mesh", "checkpoint"), ("setup", "final_checkpoint", "final_mesh",
                                                          "final_exports", "turntable")
    # (and the profiler's start and stop: the bench's own work, in no part of the estimate)
    assert set(between) == {*periodic, *one_off, "profiler", "other"} and all(between[k] >= 0 for k in between), between
    assert between["profiler"] > 0
    assert counts == dict.fromkeys((*periodic, *one_off), 1), counts
    # the kinds make up the time outside the steps (each rounded to 1 ms; outside_steps_s to 10 ms)
    assert sum(between.values()) == pytest.approx(run["outside_steps_s"], abs=0.005 + 0.0005 * len(between))
    # the tiny preset's own 30 steps at these periods: 30 // 4 previews, 29 // 2 meshes (none at the last step)
    assert run["between_steps_full_counts"] == {"views": 7, "mesh": 14, "checkpoint": 7}
    parts, full, switch = run["wall_s_full_estimate_parts"], run["preset_steps"], 15  # tiny: switch_at 0.5
    assert run["estimate_unmeasured"] == []
    # the estimate adds up: steps at the phase means, the periodic kinds' means x the full counts, the one-off
    # work once, the rest per periodic event (tolerances: the stored roundings, 1e-4 s a mean, 1 ms a kind, 10 ms a part)
    assert parts["steps"] == pytest.approx((switch * run["phase1_step_ms_mean"]
                                            + (full - switch) * run["phase2_step_ms_mean"]) / 1e3, abs=0.01)
    assert parts["periodic"] == pytest.approx(sum(run["between_steps_mean_s"][k] * run["between_steps_full_counts"][k]
                                                  for k in periodic), abs=0.01)
    assert parts["one_off"] == pytest.approx(sum(between[k] for k in one_off), abs=0.01)
    # the GPU's idle time around the periodic work, as often as that work comes at the preset's own length (28
    # events there against the 3 of this run)
    assert parts["other"] == pytest.approx(between["other"] * 28 / 3, abs=0.01 + 0.005)
    # the first (compiling) step of each phase: what it took beyond its phase's mean
    assert run["phase1_first_steps"] == run["phase2_first_steps"] == 1
    assert parts["first_steps_compiling"] == pytest.approx(sum(
        max(0.0, run[f"phase{n}_first_steps_ms"] - run[f"phase{n}_step_ms_mean"]) for n in (1, 2)) / 1e3, abs=0.01)
    assert run["wall_s_full_estimate"] == pytest.approx(sum(parts.values()), abs=0.05 + 0.005 * len(parts))
    assert set(parts) == {"steps", "first_steps_compiling", "periodic", "one_off", "other"}
    # the known object's surface spans about 0.9 world units: a mesh anywhere near it is well under 0.5 away
    assert run["chamfer"] < 0.5
    # --profile-steps 1 --profile-phase 1: one phase-1 step's regions (each part of a step that ran, timed) and the
    # top operators
    profile = run["profile"]
    assert profile["phase"] == 1 and profile["steps"] == 1 and profile["step_ms"] > 0
    regions = profile["regions_ms_per_step"]
    for name in ("render.sampling", "render.field", "render.compositing", "guidance.encode", "guidance.unet",
                 "backward", "optimizer"):
        assert regions.get(name, 0) > 0, (name, regions)
    # regions do not overlap: together (with 'other') they are the window; rounding to 1 us a region
    assert abs(sum(regions.values()) - profile["step_ms"]) < 0.01 * len(regions)
    assert 0 < len(profile["top"]) <= 15 and all(row["ms_total"] >= 0 for row in profile["top"])
    # --host-profile final_mesh: where the final mesh's host time went, the extraction itself among the top
    table, own = run["host_profiles"]["final_mesh"], run["host_profiles"]["final_mesh:own"]
    assert list(run["host_profiles"]) == ["final_mesh", "final_mesh:own"] and 0 < len(table) <= 25
    assert any("extract_mesh" in row["function"] and row["cumulative_s"] > 0 for row in table), table
    assert [row["own_s"] for row in own] == sorted((row["own_s"] for row in own), reverse=True)
    # the trainer's set-up by part, each timed
    assert set(run["setup_parts_s"]) == {"field", "memory_plan", "guidance_and_optimizer"}
    assert all(seconds >= 0 for seconds in run["setup_parts_s"].values())
    # torch.compile's work in the set-up and after it (nothing is compiled on a CPU run: --compile auto is off there)
    for part in ("compile_setup", "compile_after_setup"):
        assert run[part] == {"seconds": {}, "counters": {}}, run[part]


def test_the_known_object_renders_its_silhouette_on_white(bench):
    import torch

    from backend.diffusion.cameras import make_view_cameras
    from backend.nerf.shading import ALBEDO

    cameras = make_view_cameras([0.0], [0.0], 3.0, 40.0)
    image = bench.TwoSpheres().render(cameras, 32, ALBEDO, torch.device("cpu"))[0]
    # the benchmark's loss is the squared distance to that image, differentiable in the renders
    renders = torch.rand(1, 3, 32, 32, requires_grad=True)
    loss = bench.TwoSpheres().image_loss(renders, cameras, ALBEDO)
    loss.backward()
    assert loss.item() == pytest.approx(0.5 * (renders.detach() - image).square().sum().item(), rel=1e-6)
    assert torch.allclose(renders.grad[0], renders.detach()[0] - image)
    assert image.shape == (3, 32, 32)
    assert torch.equal(image[:, 0, 0], torch.ones(3))  # a corner: background
    body = torch.tensor(bench.TwoSpheres.spheres[0].albedo)
    assert torch.allclose(image[:, 20, 16], body)  # below the centre: the body sphere's albedo
    points = bench.TwoSpheres().surface_points(2000)
    import numpy as np

    distances = [np.abs(np.linalg.norm(points - np.array(s.center), axis=1) - s.radius)
                 for s in bench.TwoSpheres.spheres]
    assert np.minimum(*distances).max() < 1e-9  # every point on one of the spheres (float64 rounding)
    assert len(points) > 1500  # only the part of each sphere inside the other is dropped


# slow: two tiny trajectories and their floor (~10 s); .ci/run runs it with the slow tests
@pytest.mark.slow
def test_a_preset_and_its_variant_run_in_one_process_against_one_floor(bench, tmp_path):
    """``--presets tiny,tiny@padded_output_layers:steps=6``: both runs measured, each result naming its variant and
    the second run at its own step count, one floor for both; the variant is out of place again after its run."""
    from backend.nerf import field as field_module

    original = field_module._linear
    out = tmp_path / "ab.json"
    assert bench.main(["--tiny", "--device", "cpu", "--steps", "4", "--floor-repeats", "1", "--out", str(out),
                       "--presets", "tiny,tiny@padded_output_layers:steps=6", "--chamfer-samples", "2000"]) == 0
    runs = json.loads(out.read_text())["presets"]
    assert [(run["preset"], run["variant"]) for run in runs] == [("tiny", None), ("tiny", "padded_output_layers")]
    assert [run["steps"] for run in runs] == [4, 6] and "steps" not in runs[1]["overrides"]
    assert all("failed" not in run and run["phase2_step_ms_p50"] > 0 for run in runs)
    assert runs[0]["floor_ms"] == runs[1]["floor_ms"] and runs[1]["compiled_before_in_process"]
    assert field_module._linear is original



# slow: a tiny trajectory (~5 s); .ci/run runs it with the slow tests
@pytest.mark.slow
def test_a_run_cancelled_at_a_step_keeps_the_figures_of_the_steps_it_ran(bench):
    """``run_preset``'s ``cancel`` (``--deadline-s``), asked before each step: true on its fourth asking, so steps
    0-2 ran; their figures stand, the run's end (final mesh, chamfer) did not happen and ``run_failed`` says why."""
    import argparse

    from bench.known_object import TwoSpheres

    model = bench.build_model(argparse.Namespace(tiny=True, compile="off"), torch.device("cpu"))
    asked = []

    def cancel():
        asked.append(True)
        return len(asked) > 3

    result = bench.run_preset("tiny", model, torch.device("cpu"), 8, 0.0, TwoSpheres().surface_points(2000),
                              dict(bench.TINY_SETTINGS), chamfer_samples=2000, cancel=cancel)
    assert result["run_failed"].startswith("cancelled: cancelled at step 3"), result["run_failed"]
    assert result["phase1_step_ms_p50"] > 0 and result["chamfer"] is None
    assert len(asked) == 4


# slow: a tiny trajectory (~5 s); .ci/run runs it with the slow tests
@pytest.mark.slow
def test_a_run_can_load_its_model_from_a_checkpoint_file(bench, tmp_path):
    """``--checkpoint``: the model is the file's, loaded as ``iso3d generate --checkpoint`` loads it, and the
    results say so beside the model's set-up time."""
    with bench_script("random_checkpoint") as script:
        checkpoint = tmp_path / "tiny_random.safetensors"
        assert script.main(["--tiny", "--out", str(checkpoint)]) == 0
    out = tmp_path / "from_file.json"
    assert bench.main(["--tiny", "--device", "cpu", "--checkpoint", str(checkpoint), "--steps", "2",
                       "--floor-repeats", "1", "--chamfer-samples", "2000", "--out", str(out),
                       "--host-profile", "model"]) == 0
    results = json.loads(out.read_text())
    assert results["model"] == "tiny_random.safetensors"
    assert results["model_source"] == "checkpoint tiny_random.safetensors" and results["model_setup_s"] > 0
    # --host-profile model: where the set-up's time went, the checkpoint's reading among it
    functions = [row["function"] for row in results["host_profiles"]["model"]]
    assert any("load_model_from_args" in name for name in functions)
    assert any("load_checkpoint" in name for name in functions), functions
    assert "host_profiles" not in results["presets"][0]  # no run part was asked for
    assert results["presets"][0]["phase2_step_ms_p50"] > 0


def test_a_checkpoint_that_is_not_there_is_refused_in_one_line(bench, tmp_path, capsys):
    missing = tmp_path / "isotropic3d.ckpt"
    assert bench.main(["--tiny", "--device", "cpu", "--checkpoint", str(missing)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("generate bench: checkpoint ") and str(missing) in error and "\n" not in error


@pytest.mark.parametrize("steps", ["0", "many", "-3"])
def test_a_runs_own_steps_that_are_not_a_count_are_refused_in_one_line(bench, capsys, steps):
    assert bench.main(["--tiny", "--device", "cpu", "--presets", f"tiny,tiny:steps={steps}"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"generate bench: tiny:steps={steps}: steps must be a positive whole number or 'full'"


# slow: builds the tiny model (~3 s)
@pytest.mark.slow
def test_presets_past_the_deadline_are_not_run_and_say_so(bench, tmp_path):
    out = tmp_path / "late.json"
    assert bench.main(["--tiny", "--device", "cpu", "--presets", "tiny,tiny@padded_output_layers", "--deadline-s", "0",
                       "--out", str(out)]) == 1  # nothing measured
    runs = json.loads(out.read_text())["presets"]
    assert [(run["preset"], run["variant"], run["failed"]) for run in runs] == [
        ("tiny", None, "not run: past --deadline-s 0"), ("tiny", "padded_output_layers", "not run: past --deadline-s 0")]


def test_the_gpus_idle_time_between_steps_is_scaled_by_the_periodic_work_not_the_steps():
    """``other`` at the preset's own length: a 600-step run of ``reference`` does as many views, meshes and
    checkpoints as the 10,000-step one (its periods are scaled), so its ``other`` counts once; a run that did
    no periodic work falls back to the steps' ratio."""
    from bench.trajectory import full_counts, other_scale

    full = preset("reference")
    at_full = full_counts(full)
    assert other_scale(dict(at_full), at_full, 600, full.run.steps) == 1.0
    assert other_scale({"views": 25, "mesh": 10, "checkpoint": 10}, at_full, 300, full.run.steps) == pytest.approx(
        sum(at_full.values()) / 45)
    assert other_scale({"views": 0, "mesh": 0, "checkpoint": 0}, at_full, 600, full.run.steps) == pytest.approx(
        full.run.steps / 600)


@pytest.mark.integration  # a real child process importing torch (~4 s)
def test_the_process_age_counts_from_the_interpreters_start():
    """bench.trajectory.process_age_s in a real child process: its age after a sleep and its imports is at least
    the time the child measured itself from its first line, and not much more (the interpreter's own start)."""
    import subprocess
    import sys

    from tests.helpers.paths import REPO_ROOT

    child = ("import time; first = time.perf_counter(); time.sleep(0.3)\n"
             "from bench.trajectory import process_age_s\n"
             "print(process_age_s(), time.perf_counter() - first)")
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=REPO_ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    age, since_first_line = map(float, result.stdout.split())
    # ticks of 10 ms; the interpreter's start before the first line: well under 10 s even on a loaded machine
    assert since_first_line - 0.02 <= age < since_first_line + 10
    assert since_first_line >= 0.3
