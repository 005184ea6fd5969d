"""The trajectory benchmark's run of one preset (bench/generate.py): the real trainer with the known object's
target-forming loss and per-step records (GPU time, field samples, phase), and the figures of that run (per-phase
step times, samples, peak memory, the memory plan's parts, the final mesh's chamfer distance)."""

from __future__ import annotations

import tempfile
import time

import numpy as np
import torch

from backend.diffusion.sds import SDSOutput
from backend.events import Done, Failed, MeshUpdate
from backend.nerf.presets import GenerateConfig, preset
from backend.nerf.trainer import SDSTrainer
from backend.profiling import StepProfile, region
from bench.known_object import TwoSpheres, chamfer_distance


class TrajectoryTrainer(SDSTrainer):
    """The real trainer with the target-forming loss and per-step records (GPU time, samples, phase)."""

    def __init__(self, *args, target: TwoSpheres, sds_weight: float = 0.0, profile_steps: int = 0,
                 profile_from: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.target = target
        self.sds_weight = sds_weight
        self.records: list[dict] = []
        self.phase_1_peak_gib = float("nan")
        # --profile-steps: phase-2 steps profile_from .. profile_from + profile_steps - 1 (counted from the first
        # phase-2 step) are recorded, with whatever runs between them (meshes, previews, checkpoints)
        self.profile_steps = profile_steps
        self.profile_from = profile_from
        self.profile: StepProfile | None = None
        self.profile_summary: dict | None = None

    def stop_profile(self) -> None:
        if self.profile is not None:
            self.profile_summary = self.profile.stop()
            self.profile = None

    def guide(self, renders, cameras, lighting, codes, generator) -> SDSOutput:
        sds = super().guide(renders, cameras, lighting, codes, generator)  # the real guidance, all of it
        with region("bench.target"):
            target = self.target.render(cameras, renders.shape[-1], lighting, renders.device)
        image_loss = 0.5 * (renders.float() - target).square().sum() / renders.shape[0]
        # nan_to_num: a random-weight UNet's non-finite loss must not stop the run through 0 * inf (the term's
        # backward still runs the VAE encoder's backward in full)
        sds_term = torch.nan_to_num(sds.loss.float(), nan=0.0, posinf=0.0, neginf=0.0)
        return SDSOutput(image_loss + self.sds_weight * sds_term, sds.timestep, sds.grad_norm)

    def train_step(self):
        cuda = self.device.type == "cuda"
        phase = 1 if self.step < self.config.phases.switch_at * self.total_steps else 2
        if cuda and phase == 2 and not any(r["phase"] == 2 for r in self.records):
            self.phase_1_peak_gib = torch.cuda.max_memory_allocated(self.device) / 2**30
            torch.cuda.reset_peak_memory_stats(self.device)
        phase_2_index = sum(1 for r in self.records if r["phase"] == 2) if phase == 2 else -1
        if self.profile_steps and phase_2_index == self.profile_from and self.profile_summary is None:
            self.profile = StepProfile(self.device, self.profile_steps)
            self.profile.start()
        elif self.profile is not None and phase_2_index == self.profile_from + self.profile_steps:
            self.stop_profile()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        host_start = time.perf_counter()
        losses = super().train_step()
        record = {"phase": phase, "samples": self.renderer.last_sample_count,
                  "host_ms": (time.perf_counter() - host_start) * 1e3, "profiled": self.profile is not None}
        if cuda:
            end.record()
            record["events"] = (start, end)
        self.records.append(record)
        return losses


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_preset(name: str, model, device: torch.device, steps: int | None, sds_weight: float,
               reference_points: np.ndarray, overrides: dict[str, str], profile_steps: int = 0,
               chamfer_samples: int = 50000) -> dict:
    """One whole run of preset ``name`` (its step count scaled to ``steps``); the figures of that run."""
    from backend.nerf.presets import set_option

    config: GenerateConfig = preset(name)
    full_steps = config.run.steps
    if steps is not None and steps != full_steps:
        scale = steps / full_steps
        run = config.run
        run.steps = steps
        for period in ("mesh_every", "views_every", "checkpoint_every"):
            if getattr(run, period):
                setattr(run, period, max(1, round(getattr(run, period) * scale)))
    for key, value in overrides.items():
        set_option(config, key, value)
    context = torch.randn(1, 1, model.unet_context_dim, device=device,
                          generator=torch.Generator(device).manual_seed(1))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    first_mesh_s = None
    final = None
    failure = None
    with tempfile.TemporaryDirectory() as workdir:
        synchronize(device)
        start = time.perf_counter()
        # The first steps of each phase compile (CUDA graphs, field kernels for new shapes): left out of the medians
        # and of the profile (when the phase has steps enough).
        skip = min(10, max(1, config.run.steps // 20))
        phase_2_steps = config.run.steps - int(np.ceil(config.phases.switch_at * config.run.steps))
        trainer = TrajectoryTrainer(config, model, context, workdir, device, target=TwoSpheres(),
                                    sds_weight=sds_weight, profile_steps=min(profile_steps, phase_2_steps),
                                    profile_from=max(0, min(skip, phase_2_steps - profile_steps)))
        for event in trainer.run():
            if trainer.profile is not None and trainer.step == trainer.total_steps:
                trainer.stop_profile()  # the window ends with the last step, before the run's final mesh
            if isinstance(event, MeshUpdate):
                if not event.final and first_mesh_s is None:
                    first_mesh_s = time.perf_counter() - start
                if event.final:
                    final = event
            elif isinstance(event, Failed):
                failure = f"{event.code}: {event.message}"
                if not trainer.records:
                    raise RuntimeError(f"{name}: the run failed: {failure}")
                break
            elif isinstance(event, Done):
                break
        synchronize(device)
        wall = time.perf_counter() - start
    peak_run = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    records = trainer.records
    for record in records:
        events = record.pop("events", None)
        record["ms"] = events[0].elapsed_time(events[1]) if events else record["host_ms"]
    switch = int(np.ceil(config.phases.switch_at * config.run.steps))
    result: dict = {"preset": name, "steps": config.run.steps, "preset_steps": full_steps, "sds_weight": sds_weight,
                    "overrides": overrides, "wall_s": round(wall, 2),
                    "first_mesh_s": None if first_mesh_s is None else round(first_mesh_s, 2)}
    for phase in (1, 2):
        rows = [r for r in records if r["phase"] == phase]
        timed = rows[skip:] if len(rows) > 2 * skip else rows
        unprofiled = [r for r in timed if not r["profiled"]]  # the profiler's own overhead stays out of the medians
        timed = unprofiled or timed
        ms = [r["ms"] for r in timed]
        samples = [r["samples"] for r in timed]
        resolution = config.phases.resolution_before if phase == 1 else config.phases.resolution_after
        objects = config.phases.objects_before if phase == 1 else config.phases.objects_after
        result[f"phase{phase}_render"] = f"{objects}x{config.cameras.views_per_object} views at {resolution}^2"
        result[f"phase{phase}_step_ms_p50"] = round(percentile(ms, 50), 2)
        result[f"phase{phase}_step_ms_p90"] = round(percentile(ms, 90), 2)
        result[f"phase{phase}_step_ms_mean"] = round(float(np.mean(ms)) if ms else float("nan"), 2)
        result[f"phase{phase}_first_steps_ms"] = round(sum(r["ms"] for r in rows[:skip]), 1)
        result[f"phase{phase}_samples_per_step_p50"] = int(percentile(samples, 50)) if samples else 0
        result[f"phase{phase}_samples_per_step_max"] = int(max(samples)) if samples else 0
    result["samples_per_step_p50"] = result["phase2_samples_per_step_p50"]
    result["phase1_peak_gib"] = round(trainer.phase_1_peak_gib, 2)
    result["peak_gib"] = round(max(peak_run, trainer.phase_1_peak_gib), 2)
    steps_total = sum(r["ms"] for r in records) / 1e3
    result["steps_s"] = round(steps_total, 2)
    result["outside_steps_s"] = round(wall - steps_total, 2)  # model set-up, previews, meshes, checkpoints
    # The preset's own step count at this run's per-phase means, plus what the run spent outside its steps
    # (scaled by the steps' share for the periodic previews/meshes/checkpoints) and its first-step compile.
    full_switch = int(np.ceil(config.phases.switch_at * full_steps))
    estimate = (full_switch * result["phase1_step_ms_mean"] + (full_steps - full_switch)
                * result["phase2_step_ms_mean"]) / 1e3
    estimate += result["outside_steps_s"] * full_steps / config.run.steps
    result["wall_s_full_estimate"] = round(estimate, 1)
    result["switch_step"] = switch
    trainer.stop_profile()  # a run that failed inside the window
    if trainer.profile_summary is not None:
        result["profile"] = trainer.profile_summary
    if failure is not None:
        result["run_failed"] = failure  # the steps' figures stand; the run's end (mesh, views) did not happen
    plan = trainer.memory
    if plan is not None:
        result["memory_cap_gib"] = None if plan.cap_gib is None else round(plan.cap_gib, 2)
        result["memory_estimate_gib"] = round(plan.estimate_gib, 2)
        # the plan's parts, so a run's peak can be set against what the plan counted
        result["memory_plan_parts"] = plan.parts()
        if device.type == "cuda":
            result["peak_within_cap"] = plan.cap_gib is None or result["peak_gib"] <= plan.cap_gib
        for phase in plan.phases:  # what the plan set under the cap, and how many steps went over the budget
            budget, key = phase.sample_budget, f"phase{phase.number}_"
            result[key + "estimate_gib"] = round(plan.phase_estimate_gib(phase), 2)
            result[key + "vae_checkpoint_views"] = phase.vae_checkpoint_views  # None: the VAE encoder plain
            result[key + "sample_budget"] = budget  # samples evaluated without checkpointing (None: all)
            result[key + "checkpointed_steps"] = sum(1 for r in records if r["phase"] == phase.number and budget
                                                     and r["samples"] > budget)
    if final is not None:
        result["final_faces"] = int(len(final.faces))
        result["chamfer"] = round(chamfer_distance(final.vertices, final.faces, reference_points, chamfer_samples), 5)
    else:
        result["chamfer"] = None
    return result
