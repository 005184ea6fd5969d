"""The trajectory benchmark's run of one preset (bench/generate.py): the real trainer with the known object's
target-forming loss and per-step records (GPU time, field samples, phase), and the figures of that run (per-phase
step times, samples, peak memory, the memory plan's parts, the final mesh's chamfer distance, the work between the
steps by kind).

The work outside ``train_step`` is timed by kind, the device synchronised around each (``between_steps_s``, seconds,
with ``between_steps_counts``): periodic work, whose count in a shortened run is the full run's since its periods are
scaled with the steps (``views``: preview renders; ``mesh``: an intermediate mesh's step-boundary part and any wait
for its background part; ``checkpoint``: the snapshot and any wait for the background write), one-off work
(``setup``: the trainer and its memory plan; ``final_checkpoint``, ``final_mesh``, ``final_exports`` (GLB, OBJ,
PLY), ``turntable`` (render + PNG)), ``profiler`` (``--profile-steps``' start and stop, the trace's processing: the
bench's own, left out of the estimate; until 2026-12-03 session 10 it fell into ``other`` and was scaled with the
steps like the loop's time), and ``other``: the rest of the wall time. On CUDA that is the GPU's idle time between
one step's end and the next one's start, which comes with the periodic work (the device synchronised around it, the
next step starts on an empty queue), not with the steps: a 600-step ``reference`` run had 0.9-1.7 s of it and one
of 8,183 steps at the preset's own length 1.16 s, with about as many views, meshes and checkpoints
(bench/RESULTS.md, 2026-12-04 session 16). So ``wall_s_full_estimate`` = per-phase step means x the preset's steps
per phase + each periodic kind's mean per event x its count at the preset's own length + the one-off work +
``other`` x the periodic events at the preset's own length / this run's (x full steps / steps for a run with none;
until session 16 always x full steps / steps, which put 15-29 s into a 600-step run's estimate of ``reference``
where the full run spends about 1 s); its parts are ``wall_s_full_estimate_parts``. The first (compiling) steps
of each phase stay out of the means (``phase<N>_first_steps_ms``); what they took beyond the mean is the part
``first_steps_compiling`` (until 2026-12-03 session 9 it was left out: the estimate was of a run whose compiling had
already been done). In a run on a warm compile cache (``--warm-rerun``'s ``warm_rerun``) that part is what a
second process still pays.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

from backend.diffusion.sds import SDSOutput
from backend.events import Done, Failed, MeshUpdate
from backend.nerf.presets import GenerateConfig, preset
from backend.nerf.trainer import SDSTrainer
from backend.profiling import (REGIONS, HostClock, StepProfile, compile_statistics, compile_statistics_since,
                               graphs_compiled, region)
from bench.known_object import TwoSpheres, chamfer_distance


class TrajectoryTrainer(SDSTrainer):
    """The real trainer with the target-forming loss and per-step records (GPU time, samples, phase)."""

    def __init__(self, *args, target: TwoSpheres, sds_weight: float = 0.0, profile_steps: int = 0,
                 profile_from: int = 0, profile_phase: int = 2, host_profiles: tuple[str, ...] = (),
                 first_steps: int = 0, **kwargs):
        self.host_profiles = HostProfiles(host_profiles)
        with self.host_profiles.of("setup"):
            super().__init__(*args, **kwargs)
        self.target = target
        self.sds_weight = sds_weight
        self.records: list[dict] = []
        self.steps_in_phase = {1: 0, 2: 0}  # the records of each phase, counted as they are made
        self.phase_1_peak_gib = float("nan")
        # --profile-steps: steps profile_from .. profile_from + profile_steps - 1 of phase ``profile_phase`` (counted
        # from the phase's first step) are recorded, with whatever runs between them (meshes, previews, checkpoints)
        self.profile_steps = profile_steps
        self.profile_from = profile_from
        self.profile_phase = profile_phase
        self.profile: StepProfile | None = None
        self.profile_summary: dict | None = None
        self.between_steps_s: dict[str, float] = {}
        self.between_steps_counts: dict[str, int] = {}
        self.first_steps = first_steps  # the first steps of each phase (compiling): host-profiled when asked
        self.finishing = False  # the steps are done: checkpoint writes and waits are the final one's
        self._between_depth = 0
        self._kinds_since_step: list[str] = []  # the between-step work since the last step (``slowest_steps``)

    @contextlib.contextmanager
    def between(self, kind: str, counted: bool = True):
        """Time work outside the steps as ``kind`` (device synchronised around it); work inside other timed work
        is that work's."""
        if self._between_depth:
            yield
            return
        self._between_depth += 1
        self._kinds_since_step.append(kind)
        synchronize(self.device)
        start = time.perf_counter()
        try:
            with self.host_profiles.of(kind):
                yield
        finally:
            synchronize(self.device)
            self.between_steps_s[kind] = self.between_steps_s.get(kind, 0.0) + time.perf_counter() - start
            if counted:
                self.between_steps_counts[kind] = self.between_steps_counts.get(kind, 0) + 1
            self._between_depth -= 1

    def render_views(self, *args, **kwargs):
        with self.between("views"):
            return super().render_views(*args, **kwargs)

    def _start_intermediate_mesh(self, step: int) -> None:
        with self.between("mesh"):
            super()._start_intermediate_mesh(step)

    def _collect_mesh(self, wait: bool):
        if not self.meshes.collectable(wait):
            return  # nothing to collect: no synchronisation at this boundary (the steps run as in a real run)
        with self.between("mesh", counted=False):
            event = self.meshes.collect(wait)
        if event is not None:
            yield event

    def save_checkpoint(self, *args, **kwargs):
        with self.between("checkpoint"):
            return super().save_checkpoint(*args, **kwargs)

    def wait_for_checkpoint(self) -> None:
        with self.between("final_checkpoint" if self.finishing else "checkpoint", counted=False):
            super().wait_for_checkpoint()

    def _final_checkpoint(self, elapsed: float) -> None:
        self.finishing = True
        with self.between("final_checkpoint"):
            super()._final_checkpoint(elapsed)

    def extract_mesh(self, resolution: int | None = None):
        with self.between("final_mesh" if resolution is None else "mesh"):
            return super().extract_mesh(resolution)

    def _export_final(self, mesh):
        with self.between("final_exports"):
            return super()._export_final(mesh)

    def _turntable(self):
        with self.between("turntable"):
            return super()._turntable()

    def stop_profile(self) -> None:
        if self.profile is not None:
            with self.between("profiler", counted=False):  # the trace's processing: the bench's, not the run's
                self.profile_summary = {"phase": self.profile_phase, **self.profile.stop()}
            self.profile = None

    def guide(self, renders, cameras, lighting, codes, generator) -> SDSOutput:
        sds = super().guide(renders, cameras, lighting, codes, generator)  # the real guidance, all of it
        with region("bench.target"), torch.autocast(renders.device.type, enabled=False):  # float32, as warmed up
            image_loss = self.target.image_loss(renders, cameras, lighting)
        # nan_to_num: a random-weight UNet's non-finite loss must not stop the run through 0 * inf (the term's
        # backward still runs the VAE encoder's backward in full)
        sds_term = torch.nan_to_num(sds.loss.float(), nan=0.0, posinf=0.0, neginf=0.0)
        return SDSOutput(image_loss + self.sds_weight * sds_term, sds.timestep, sds.grad_norm)

    def train_step(self):
        cuda = self.device.type == "cuda"
        phase = 1 if self.step < self.config.phases.switch_at * self.total_steps else 2
        if cuda and phase == 2 and not self.steps_in_phase[2]:
            self.phase_1_peak_gib = torch.cuda.max_memory_allocated(self.device) / 2**30
            torch.cuda.reset_peak_memory_stats(self.device)
        index = self.steps_in_phase[phase] if phase == self.profile_phase else -1
        if self.profile_steps and index == self.profile_from and self.profile_summary is None:
            with self.between("profiler", counted=False):
                self.profile = StepProfile(self.device, self.profile_steps)
                self.profile.start()
        elif self.profile is not None and (index == self.profile_from + self.profile_steps or phase != self.profile_phase):
            self.stop_profile()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        host_start = time.perf_counter()
        index = self.steps_in_phase[phase]
        kind = f"phase{phase}_first_steps" if index < self.first_steps else \
            f"phase{phase}_steps" if index < self.first_steps + HOST_PROFILED_STEPS else ""
        clock = HostClock()  # the step's waits for the device at its known synchronisations, and its regions
        graphs_before = graphs_compiled()
        clock.start()
        try:
            with self.host_profiles.of(kind):
                losses = super().train_step()
        finally:
            clock.stop()
        record = {"step": self.step - 1, "after": sorted(set(self._kinds_since_step)), "phase": phase,
                  "samples": self.renderer.last_sample_count,
                  "marched": self.renderer.last_marched_count,
                  "host_ms": (time.perf_counter() - host_start) * 1e3, "wait_ms": clock.wait_seconds * 1e3,
                  "region_host_ms": {name: seconds * 1e3 for name, seconds in clock.region_seconds.items()},
                  "graphs_compiled": graphs_compiled() - graphs_before,
                  "profiled": self.profile is not None}
        if cuda:
            end.record()
            record["events"] = (start, end)
        self.records.append(record)
        self._kinds_since_step = []
        self.steps_in_phase[phase] += 1
        return losses


SLOWEST_STEPS = 5  # phase<N>_slowest_steps: the timed steps listed by time
HOST_PROFILED_STEPS = 20  # --host-profile phase<N>_steps: the steps after the phase's first ones


class HostProfiles:
    """cProfile of named parts of a run (``--host-profile setup,final_mesh,phase1_first_steps``): where their host
    time goes, the top functions by cumulative seconds (``tables()``). A kind is a one-off part of the work between
    the steps (``setup``, ``final_mesh``, ...; the device is synchronised around them, so waits on it show in the
    functions that waited), ``phase<N>_first_steps``: the first, compiling steps of a phase, all of them, or
    ``phase<N>_steps``: the phase's next ``HOST_PROFILED_STEPS`` steps (where a step bound by its host spends it)."""

    def __init__(self, kinds: tuple[str, ...], top: int = 25):
        self.kinds = set(kinds)
        self.top = top
        self._profiles: dict[str, object] = {}

    @contextlib.contextmanager
    def of(self, kind: str):
        """Within: profiled as ``kind`` (added to what that kind profiled before), if ``kind`` was asked for."""
        if kind not in self.kinds:
            yield
            return
        import cProfile

        profiler = self._profiles.setdefault(kind, cProfile.Profile())
        profiler.enable()
        try:
            yield
        finally:
            profiler.disable()

    def tables(self) -> dict[str, list[dict]]:
        import pstats

        tables = {}
        for kind, profiler in self._profiles.items():
            rows = []
            for (path, line, function), (_, calls, own, cumulative, _) in pstats.Stats(profiler).stats.items():
                rows.append({"function": f"{'/'.join(path.split('/')[-2:])}:{line}({function})", "calls": calls,
                             "own_s": round(own, 3), "cumulative_s": round(cumulative, 3)})
            rows.sort(key=lambda row: -row["cumulative_s"])
            tables[kind] = rows[:self.top]
            rows.sort(key=lambda row: -row["own_s"])  # and by their own time: where a host-bound step's time is
            tables[f"{kind}:own"] = rows[:self.top]
        return tables


def host_ms_by_region(records: list[dict]) -> dict[str, float]:
    """The p50 over steps of the host's milliseconds in each top-level region (``backend.profiling.REGIONS`` order;
    ``render.sampling`` with its waits for the device) and in the rest of the step (``other``: cameras, losses, the
    step's own bookkeeping); a region a step did not enter counts 0 there (``grid_update``: one step in 16)."""
    names = [name for name in REGIONS if any(name in r["region_host_ms"] for r in records)]
    table = {name: round(percentile([r["region_host_ms"].get(name, 0.0) for r in records], 50), 3) for name in names}
    table["other"] = round(percentile([r["host_ms"] - sum(r["region_host_ms"].values()) for r in records], 50), 3)
    return table


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


PERIODIC = {"views": "views_every", "mesh": "mesh_every", "checkpoint": "checkpoint_every"}
ONE_OFF = ("setup", "final_checkpoint", "final_mesh", "final_exports", "turntable")


def full_counts(config: GenerateConfig) -> dict[str, int]:
    """How many of each periodic kind a run of ``config`` does (the trainer's conditions: a mesh at steps before
    the last, views and checkpoints at every multiple of their period)."""
    run = config.run
    return {"views": run.steps // run.views_every if run.views_every else 0,
            "mesh": (run.steps - 1) // run.mesh_every if run.mesh_every else 0,
            "checkpoint": run.steps // run.checkpoint_every if run.checkpoint_every else 0}


def phase_1_steps(config: GenerateConfig) -> int:
    """The steps of phase 1 (the trainer's ``step < phases.switch_at * steps``)."""
    return int(np.ceil(config.phases.switch_at * config.run.steps))


def full_preset(name: str, overrides: dict[str, str]) -> GenerateConfig:
    """Preset ``name`` at its own step count with a run's ``overrides``: what the full-length figures are of."""
    from backend.nerf.presets import set_option

    full = preset(name)
    for key, value in overrides.items():
        set_option(full, key, value)
    return full


def full_length_estimate(trainer: TrajectoryTrainer, name: str, overrides: dict[str, str], setup_s: float,
                         outside_s: float, result: dict) -> dict:
    """``wall_s_full_estimate`` of the preset at its own length and its parts (see the module's docstring)."""
    full = full_preset(name, overrides)
    full_steps, steps = full.run.steps, trainer.config.run.steps
    by_kind = dict(trainer.between_steps_s, setup=setup_s)
    counts = dict(trainer.between_steps_counts, setup=1)
    by_kind["other"] = max(0.0, outside_s - sum(by_kind.values()))  # the loop and the events (host, per step)
    at_full = full_counts(full)
    means = {kind: by_kind[kind] / counts[kind] for kind in PERIODIC if counts.get(kind)}
    full_switch = phase_1_steps(full)
    # each phase's first (compiling) steps beyond what they would take at the phase's mean: the compile of this
    # run's cache state (cold or warm), which a run of the full length pays the same
    compiling = sum(max(0.0, result[f"phase{phase}_first_steps_ms"] - result[f"phase{phase}_first_steps"]
                        * result[f"phase{phase}_step_ms_mean"]) for phase in (1, 2)
                    if result[f"phase{phase}_first_steps"]) / 1e3
    parts = {"steps": (full_switch * result["phase1_step_ms_mean"] + (full_steps - full_switch)
                       * result["phase2_step_ms_mean"]) / 1e3,
             "first_steps_compiling": compiling,
             "periodic": sum(means.get(kind, 0.0) * at_full[kind] for kind in PERIODIC),
             "one_off": sum(by_kind.get(kind, 0.0) for kind in ONE_OFF),
             "other": by_kind["other"] * other_scale(counts, at_full, steps, full_steps)}
    return {"between_steps_s": {kind: round(value, 3) for kind, value in by_kind.items()},
            "between_steps_counts": {kind: counts.get(kind, 0) for kind in (*PERIODIC, *ONE_OFF)},
            "between_steps_full_counts": at_full,
            "between_steps_mean_s": {kind: round(value, 4) for kind, value in means.items()},
            # periodic kinds the full run does but this one did not (no mean to count them with)
            "estimate_unmeasured": [kind for kind in PERIODIC if at_full[kind] and kind not in means],
            "wall_s_full_estimate_parts": {key: round(value, 2) for key, value in parts.items()},
            "wall_s_full_estimate": round(sum(parts.values()), 1)}


def other_scale(counts: dict[str, int], at_full: dict[str, int], steps: int, full_steps: int) -> float:
    """What ``other`` of this run is multiplied by at the preset's own length: the periodic events there over this
    run's (the idle time after each; see the module's docstring), or the steps' ratio for a run with none."""
    events = sum(counts.get(kind, 0) for kind in PERIODIC)
    return sum(at_full.values()) / events if events else full_steps / steps


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def process_age_s() -> float | None:
    """Seconds since this process started, the interpreter's start and its imports included (Linux: /proc, to
    the kernel's clock tick, 10 ms); None where that cannot be read."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
            since_boot = float(uptime.read().split()[0])
        return since_boot - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of proc(5): starttime
    except (OSError, ValueError, IndexError):
        return None


def run_preset(name: str, model, device: torch.device, steps: int | None, sds_weight: float,
               reference_points: np.ndarray, overrides: dict[str, str], profile_steps: int = 0,
               chamfer_samples: int = 50000, profile_phase: int = 2, host_profiles: tuple[str, ...] = (),
               cancel: Callable[[], bool] | None = None) -> dict:
    """One whole run of preset ``name`` (its step count scaled to ``steps``); the figures of that run. Where
    ``cancel()`` turns true (asked at each step boundary; bench/generate.py's ``--deadline-s``) the run stops there
    and the figures are those of the steps it ran (``run_failed`` says so)."""
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
    target = TwoSpheres()
    views = config.cameras.views_per_object
    target.warm_up(device, [(config.phases.objects_before * views, config.phases.resolution_before),
                            (config.phases.objects_after * views, config.phases.resolution_after)])
    with tempfile.TemporaryDirectory() as workdir:
        synchronize(device)
        compiled_before = compile_statistics()
        start = time.perf_counter()
        # The first steps of each phase compile (CUDA graphs, field kernels for new shapes): left out of the medians
        # and of the profile (when the phase has steps enough).
        skip = min(10, max(1, config.run.steps // 20))
        switch = phase_1_steps(config)
        phase_steps = switch if profile_phase == 1 else config.run.steps - switch
        trainer = TrajectoryTrainer(config, model, context, workdir, device, target=target,
                                    sds_weight=sds_weight, profile_steps=min(profile_steps, phase_steps),
                                    profile_from=max(0, min(skip, phase_steps - profile_steps)),
                                    profile_phase=profile_phase, host_profiles=host_profiles, first_steps=skip)
        synchronize(device)
        setup_s = time.perf_counter() - start
        compiled_after_setup = compile_statistics()
        for event in trainer.run(cancel):
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
        process_age = process_age_s()
        compiled_at_end = compile_statistics()
    peak_run = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    records = trainer.records
    for record in records:
        events = record.pop("events", None)
        record["ms"] = events[0].elapsed_time(events[1]) if events else record["host_ms"]
    result: dict = {"preset": name, "steps": config.run.steps, "preset_steps": full_steps, "sds_weight": sds_weight,
                    "overrides": overrides, "wall_s": round(wall, 2),
                    # from the process's start (interpreter, imports, model, earlier runs) to this run's end: for a
                    # process's first run, what a new `iso3d generate` process takes in all
                    "process_wall_s": None if process_age is None else round(process_age, 2),
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
        # the steps that pull the mean above the median: which step, its samples, the work just before it, and the
        # graphs torch.compile traced in it (a recompilation)
        result[f"phase{phase}_slowest_steps"] = [
            {"step": r["step"], "ms": round(r["ms"], 2), "samples": r["samples"], "after": r["after"],
             "graphs_compiled": r["graphs_compiled"]}
            for r in sorted(timed, key=lambda r: -r["ms"])[:SLOWEST_STEPS]]
        # the host's own time in the step (Python, launches, waits on the GPU): near the step's GPU time when the step
        # waits on the device (a synchronisation) or when the host cannot launch fast enough
        result[f"phase{phase}_host_ms_p50"] = round(percentile([r["host_ms"] for r in timed], 50), 2)
        # of which the host waited for the device at the step's known synchronisations (the march sizing its
        # outputs, the count of visible samples), and the rest: the host's own work; near the step's time, the
        # step is bound by its host, well under it by its GPU
        result[f"phase{phase}_host_wait_ms_p50"] = round(percentile([r["wait_ms"] for r in timed], 50), 2)
        result[f"phase{phase}_host_work_ms_p50"] = round(
            percentile([r["host_ms"] - r["wait_ms"] for r in timed], 50), 2)
        result[f"phase{phase}_host_ms_by_region_p50"] = host_ms_by_region(timed)
        result[f"phase{phase}_first_steps_ms"] = round(sum(r["ms"] for r in rows[:skip]), 1)
        result[f"phase{phase}_first_steps"] = len(rows[:skip])
        # graphs torch.compile traced in the phase's steps after its first ones (a recompilation mid-run)
        result[f"phase{phase}_graphs_compiled_after_first_steps"] = sum(r["graphs_compiled"] for r in rows[skip:])
        result[f"phase{phase}_samples_per_step_p50"] = int(percentile(samples, 50)) if samples else 0
        result[f"phase{phase}_samples_per_step_max"] = int(max(samples)) if samples else 0
        # the occupancy grid's march (CUDA; 0 on the CPU): samples through occupied cells, each queried by the
        # density filter, of which ``samples`` were visible
        marched = [r["marched"] for r in timed]
        result[f"phase{phase}_marched_per_step_p50"] = int(percentile(marched, 50)) if marched else 0
    result["samples_per_step_p50"] = result["phase2_samples_per_step_p50"]
    result["phase1_peak_gib"] = round(trainer.phase_1_peak_gib, 2)
    result["peak_gib"] = round(max(peak_run, trainer.phase_1_peak_gib), 2)
    steps_total = sum(r["ms"] for r in records) / 1e3
    result["steps_s"] = round(steps_total, 2)
    result["outside_steps_s"] = round(wall - steps_total, 2)  # trainer set-up, previews, meshes, checkpoints
    result.update(full_length_estimate(trainer, name, overrides, setup_s, wall - steps_total, result))
    result["switch_step"] = switch
    # the trainer's set-up by part (seconds): field, memory plan (its measurements on the device), guidance and
    # optimiser; the condition (image encoder) is not part of this bench's set-up
    result["setup_parts_s"] = {part: round(ms / 1e3, 3) for part, ms in trainer.setup_ms.items()}
    # torch.compile's work (Dynamo tracing, AOTAutograd, Inductor compiling or loading from the cache; the caches'
    # hits and misses) in the set-up and in the rest of the run: what a new process pays on a warm compile cache
    result["compile_setup"] = compile_statistics_since(compiled_before, compiled_after_setup)
    result["compile_after_setup"] = compile_statistics_since(compiled_after_setup, compiled_at_end)
    trainer.stop_profile()  # a run that failed inside the window
    if trainer.profile_summary is not None:
        result["profile"] = trainer.profile_summary
    if trainer.host_profiles.kinds:
        result["host_profiles"] = trainer.host_profiles.tables()
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
