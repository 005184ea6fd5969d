"""GPU memory of a generation: the estimate at the start, phase by phase, the refusal that names a preset that
fits, and what adapts under a cap (the VAE encoder and the field under activation checkpointing).

The cap is ``run.max_gpu_memory`` (GiB; ``iso3d generate/serve --max-gpu-memory``), or on CUDA with no cap set the
device's total memory. A phase's step (phase 1: ``objects_before`` x views at ``resolution_before``^2, then phase 2)
holds, measured on this device with this model and field (backend.nerf.memory_measure says how), not guessed:

- base: the model's weights and buffers, the field's parameters with their gradients and two Adam moments;
- UNet reserve: on CUDA ``UNET_RESERVE_GIB`` for the guidance UNet's inference workspace and CUDA-graph pools
  (not measured here: measuring it would record the run's CUDA graphs out of the run);
- VAE: on CUDA what the run's encoder (compiled where the model has it) holds at its peak over forward and backward
  for the phase's views, resized and encoded as the guidance does under the run's autocast (the allocator's
  figures); on a CPU the eager encoder's saved activations (measured for one small image, scaled by pixels).
  Under checkpointing (backend.models.vae.checkpointed_moments) the chunks' inputs and outputs are kept, plus one
  chunk's saved activations of the eager encoder that chunks run, recomputed in the backward;
- samples: the phase's rays x ``SAMPLES_PER_RAY`` (measured maxima, below) x the bytes a field sample holds (field
  with normals, shading, compositing): on CUDA the allocator's kept and peak bytes of the compiled field with the
  fused hash grid and float16-autocast MLPs (a fixed part and a per-sample part from two sample counts), on a CPU
  autograd's saved tensors of the plain-torch field; under checkpointing the saved bytes kept for one sample
  (points, outputs, compositing).

Why the sum bounds the step's peak from above: a step holds the field's kept bytes while the VAE encoder runs
forward, the UNet runs, and the encoder runs backward; the VAE part is its own peak over forward and backward
(its kept bytes included), so base + samples kept + VAE + UNet reserve bounds those moments. The encoder's
activations are freed in the backward before the field's, so the field's own peak (forward and backward) counts
alone beside base; except where the plain encoder replays from CUDA graphs (backend.models.graphed_encoder): their
memory pool stays reserved for the whole phase, so the VAE part counts beside the field's own peak too. The
phase's need is ``SLACK`` x (base + the larger of the two); the run's estimate is the larger phase's. Each part is
measured at its largest (the most samples a ray, the eager encoder where chunks run eager), and the allocator's
figures include the allocator's rounding of each block.

Under a cap each phase takes the cheapest setting that fits: plain; else the VAE encoder checkpointed in chunks of
half the views, a quarter, ..., one view (one more encoder forward a step); and always a sample budget: a step whose
samples exceed what is left evaluates the field in checkpointed chunks of that many samples (exact gradients, one
more field forward), which guards a step with more samples than expected. A run that cannot fit even with
everything checkpointed is refused at the start with a sentence naming the largest preset that fits. Estimates are
in GiB (2^30 bytes). Measured against the estimate: docs/performance.md, "GPU memory cap".
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field as dataclass_field

import torch

from backend.models.graphed_encoder import GraphedEncoder
from backend.nerf.memory_measure import Footprint, field_footprint, measuring_collections, module_bytes, \
    vae_allocator_footprint, vae_bytes_per_view
from backend.profiling import Laps

GIB = 2**30
# Field samples per ray the plan expects, the maxima measured (bench/generate.py, 600-step trajectories of fast and
# reference, one H200, 2026-12-02, bench/results/generate_h200_2026-12-02_baseline.json):
# - the phase that starts the run: 1,252,188 samples for 2 x 4 views at 64^2 (38.2 a ray; median 317,639, 9.7 a
#   ray): the first steps, before the occupancy grid prunes the initial density blob; the first 6 steps of
#   tests/nerf/test_memory_cuda.py (another target, one H200, 2026-12-02): 1,374,596 (41.9 a ray);
# - a later phase: 599,655 for 4 x 128^2 (9.2 a ray; median 5.6) and 2,332,211 for 4 x 256^2 (8.9; median 5.4).
# More samples than this in a step are not an error: the sample budget evaluates them in checkpointed chunks.
SAMPLES_PER_RAY_FIRST_PHASE = 44
SAMPLES_PER_RAY_LATER_PHASE = 10
# Kept for the guidance UNet's inference (activations of one [uncond; cond] batch, the CUDA-graph pools): not
# measured by the plan.
UNET_RESERVE_GIB = 1.5
SLACK = 1.10  # the allocator's fragmentation and rounding: 10% over the measured sum
MIN_SAMPLE_CHUNK = 1 << 12  # the smallest checkpointed chunk of field samples a step evaluates


@dataclass
class PhasePlan:
    """One phase's step under the plan (GiB, counts of samples and views)."""

    number: int  # 1: before phases.switch_at, 2: after
    steps: int  # steps of the run in this phase (0: the phase does not run)
    views: int  # images a step renders and encodes
    rays: int
    expected_samples: int  # rays x the measured samples per ray
    vae_gib_per_view: float  # the plain encoder (the run's, compiled where it is): its peak over forward and backward
    vae_checkpointed_gib_per_view: float  # kept under checkpointing (chunk inputs and outputs)
    vae_checkpoint_views: int | None = None  # the VAE encoder checkpointed in chunks of this many views (None: plain)
    sample_budget: int | None = None  # samples a step evaluates without checkpointing (None: unlimited)
    vae_eager_gib_per_view: float | None = None  # the eager encoder a checkpointed chunk recomputes (None: as plain)

    def vae_gib(self, chunk: int | None) -> float:
        if chunk is None:
            return self.views * self.vae_gib_per_view
        recomputed = self.vae_gib_per_view if self.vae_eager_gib_per_view is None else self.vae_eager_gib_per_view
        # kept for every view, and one chunk's activations while it is recomputed in the backward
        return self.views * self.vae_checkpointed_gib_per_view + min(chunk, self.views) * recomputed


@dataclass
class MemoryPlan:
    """What a run needs (GiB) phase by phase and how each phase keeps under ``cap_gib``."""

    cap_gib: float | None
    base_gib: float  # weights, field state
    bytes_per_sample: float  # kept for the backward, plain evaluation
    bytes_per_sample_checkpointed: float  # kept for the backward under checkpointing
    phases: list[PhasePlan] = dataclass_field(default_factory=list)  # the phases that run
    density_chunk: int = 1 << 22  # samples per no-gradient density query of the sampler
    unet_reserve_gib: float = 0.0  # the guidance UNet's inference (CUDA)
    sample_peak_bytes: float | None = None  # a plain sample's peak over forward and backward (None: as kept)
    sample_fixed_bytes: float = 0.0  # the field evaluation's fixed part (measured beside the per-sample part)
    measured_by: str = "saved tensors"  # how the plain samples were measured (memory_measure.Footprint.method)
    vae_graphs: bool = False  # the plain VAE encoder replays from CUDA graphs: its pool is held all the phase
    # host milliseconds of each measurement made for this plan (0-ish where the process had it already: a warm
    # service's jobs); on CUDA a measurement's first use of compiled code traces it (and compiles or loads it)
    measure_ms: dict[str, float] = dataclass_field(default_factory=dict)

    def vae_held_gib(self, phase: "PhasePlan", vae_chunk: int | None) -> float:
        """What the VAE encoder holds while the field is at its own peak: its CUDA graphs' pool (a plain
        encoder that replays from graphs), else nothing (its activations are freed by then)."""
        return phase.vae_gib(None) if self.vae_graphs and vae_chunk is None else 0.0

    def phase(self, number: int) -> PhasePlan | None:
        return next((p for p in self.phases if p.number == number), None)

    @property
    def bytes_per_sample_peak(self) -> float:
        return self.bytes_per_sample if self.sample_peak_bytes is None else self.sample_peak_bytes

    def step_gib(self, phase: PhasePlan, vae_chunk: int | None, plain_samples: int, checkpointed_samples: int) -> float:
        """The need of a step of ``phase`` (SLACK included) with the VAE encoder checkpointed in chunks of
        ``vae_chunk`` views (None: plain), ``plain_samples`` evaluated plain and ``checkpointed_samples`` kept
        checkpointed: the larger of the field's samples held beside the guidance (VAE, UNet) and their own peak."""
        kept_checkpointed = checkpointed_samples * self.bytes_per_sample_checkpointed
        beside = (plain_samples * self.bytes_per_sample + kept_checkpointed + self.sample_fixed_bytes) / GIB
        alone = (plain_samples * self.bytes_per_sample_peak + kept_checkpointed + self.sample_fixed_bytes) / GIB
        alone += self.vae_held_gib(phase, vae_chunk)
        return SLACK * (self.base_gib + max(beside + phase.vae_gib(vae_chunk) + self.unet_reserve_gib, alone))

    def phase_need_gib(self, phase: PhasePlan, vae_chunk: int | None, checkpointed_samples: bool) -> float:
        """The phase's need with the VAE encoder checkpointed in chunks of ``vae_chunk`` views (None: plain) and
        the field samples plain or checkpointed (then one smallest chunk of plain samples being recomputed)."""
        if checkpointed_samples:
            return self.step_gib(phase, vae_chunk, MIN_SAMPLE_CHUNK, phase.expected_samples)
        return self.step_gib(phase, vae_chunk, phase.expected_samples, 0)

    def need_gib(self, checkpointed: bool) -> float:
        """The run's need: plain (False) or with the samples checkpointed and the VAE encoder in its least setting
        (True: the least it can take; on CUDA the plain compiled encoder can hold less than an eager chunk)."""
        def least(phase: PhasePlan) -> float:
            settings = [None] + _vae_chunks(phase.views) if checkpointed else [None]
            return min(self.phase_need_gib(phase, chunk, checkpointed) for chunk in settings)

        return max((least(p) for p in self.phases), default=SLACK * (self.base_gib + self.unet_reserve_gib))

    def phase_estimate_gib(self, phase: PhasePlan) -> float:
        """The phase's expected peak under its settings (the samples plain up to the budget)."""
        if phase.sample_budget is None or phase.sample_budget >= phase.expected_samples:
            return self.phase_need_gib(phase, phase.vae_checkpoint_views, False)
        return self.step_gib(phase, phase.vae_checkpoint_views, phase.sample_budget, phase.expected_samples)

    @property
    def estimate_gib(self) -> float:
        """The expected peak of the run: the largest phase's."""
        return max((self.phase_estimate_gib(p) for p in self.phases),
                   default=SLACK * (self.base_gib + self.unet_reserve_gib))

    @property
    def fits(self) -> bool:
        return self.cap_gib is None or self.need_gib(True) <= self.cap_gib

    def describe(self) -> str:
        """One line per phase: views, expected samples, what is checkpointed, the estimate."""
        lines = []
        for p in self.phases:
            vae = "plain" if p.vae_checkpoint_views is None else f"checkpointed in chunks of {p.vae_checkpoint_views}"
            budget = "all plain" if p.sample_budget is None else f"budget {p.sample_budget:,}"
            lines.append(f"phase {p.number}: {p.views} views, {p.expected_samples:,} samples expected ({budget}), "
                         f"VAE {vae} ({p.vae_gib(p.vae_checkpoint_views):.2f} GiB): "
                         f"{self.phase_estimate_gib(p):.1f} GiB")
        return "\n".join(lines)

    def parts(self) -> dict:
        """The plan's measured parts (bytes and GiB), for benchmarks to set against measured peaks."""
        return {"base_gib": round(self.base_gib, 3), "unet_reserve_gib": self.unet_reserve_gib,
                "measured_by": self.measured_by,
                "bytes_per_sample": round(self.bytes_per_sample, 1),
                "bytes_per_sample_peak": round(self.bytes_per_sample_peak, 1),
                "sample_fixed_bytes": round(self.sample_fixed_bytes),
                "bytes_per_sample_checkpointed": round(self.bytes_per_sample_checkpointed, 1),
                "vae_graphs": self.vae_graphs,
                "vae_gib_per_view": {p.number: round(p.vae_gib_per_view, 4) for p in self.phases},
                "measure_ms": dict(self.measure_ms)}


def model_bytes(model) -> int:
    unet = getattr(model, "eager_unet", None) or model.unet
    parts = [unet, getattr(model, "vae", None), getattr(model, "image_encoder", None)]
    return sum(module_bytes(part) for part in parts if isinstance(part, torch.nn.Module))


def device_cap_gib(config, device: torch.device) -> float | None:
    """The cap in GiB: the smaller of ``run.max_gpu_memory`` (if set) and the CUDA device's memory; on a CPU the
    setting alone (None without one)."""
    caps = [float(config.run.max_gpu_memory)] if config.run.max_gpu_memory > 0 else []
    if device.type == "cuda":
        caps.append(torch.cuda.get_device_properties(device).total_memory / GIB)
    return min(caps) if caps else None


def _phases(config, vae_figures) -> list[PhasePlan]:
    """The phases that run (a phase of no steps is left out); the first one starts from the initial blob.
    ``vae_figures(views, resolution)``: (plain, checkpointed, eager) GiB a view."""
    ph, steps = config.phases, config.run.steps
    switch = min(math.ceil(ph.switch_at * steps), steps)
    phases = []
    for number, objects, resolution, count in ((1, ph.objects_before, ph.resolution_before, switch),
                                               (2, ph.objects_after, ph.resolution_after, steps - switch)):
        if count <= 0:
            continue
        views = objects * config.cameras.views_per_object
        rays = views * resolution**2
        per_ray = SAMPLES_PER_RAY_LATER_PHASE if phases else SAMPLES_PER_RAY_FIRST_PHASE
        plain, kept, eager = vae_figures(views, resolution)
        phases.append(PhasePlan(number, count, views, rays, rays * per_ray, plain, kept,
                                vae_eager_gib_per_view=eager))
    return phases


def _vae_chunks(views: int) -> list[int]:
    """VAE checkpoint chunks from the cheapest: half the views, a quarter, ..., one view."""
    chunks, chunk = [], views // 2
    while chunk >= 1:
        chunks.append(chunk)
        chunk //= 2
    return chunks or [1]


def plan_memory(config, model, device: torch.device, field=None, renderer_evaluate=None,
                planned_for: str | None = None) -> MemoryPlan:
    """The memory plan of ``config`` with ``model`` on ``device`` (the field is built here when not given, and on
    CUDA set up as the trainer sets it up: MLPs under float16 autocast, compiled).

    ``planned_for``: the device type the plan is for when measured on another (bench/memory_plan.py: "cuda"
    measured on a CPU adds the UNet reserve; the VAE and the samples are then measured by saved tensors in the CPU's
    float32, above what CUDA's float16 autocast and compiled code hold)."""
    from backend.diffusion.precision import guidance_autocast_dtype
    from backend.nerf.field import run_field
    from backend.nerf.renderer import evaluate_samples

    device = torch.device(device)
    if field is None:
        with torch.random.fork_rng(devices=[]):
            field = run_field(config.field, device, config.run.mixed_precision)  # as SDSTrainer sets it up
    evaluate = renderer_evaluate or evaluate_samples
    field_state = 4 * module_bytes(field)  # parameters, gradients, Adam's two moments
    autocast = None
    if device.type == "cuda" and config.run.mixed_precision:
        autocast = guidance_autocast_dtype(next(model.vae.parameters()).dtype)
    size = config.guidance.latent_resolution_input
    laps = Laps()
    # on CUDA each allocator measurement collects garbage around it: only the new objects' (measuring_collections)
    on_the_allocator = device.type == "cuda"
    with measuring_collections() if on_the_allocator else contextlib.nullcontext():
        if on_the_allocator:
            laps("collect")
        eager = vae_bytes_per_view(model.vae, size, device, autocast, checkpointed=False) / GIB
        laps("vae_saved_tensors")
        kept = vae_bytes_per_view(model.vae, size, device, autocast, checkpointed=True) / GIB
        laps("vae_checkpointed_saved_tensors")

        def vae_figures(views: int, resolution: int) -> tuple[float, float, float]:
            measured = None
            if on_the_allocator:
                laps("between")
                measured = vae_allocator_footprint(model, views, resolution, size, device, autocast)
                laps(f"vae_{views}x{resolution}")
            return (eager if measured is None else measured.peak_per_unit / GIB), kept, eager

        on_cuda = (planned_for or device.type) == "cuda"
        plain: Footprint = field_footprint(field, evaluate, device, checkpointed=False)
        laps("field")
        checkpointed = field_footprint(field, evaluate, device, checkpointed=True)
        laps("field_checkpointed")
        plan = MemoryPlan(device_cap_gib(config, device), (model_bytes(model) + field_state) / GIB, plain.kept_per_unit,
                          checkpointed.kept_per_unit, _phases(config, vae_figures),
                          density_chunk=config.renderer.chunk_rays * 64,
                          unet_reserve_gib=UNET_RESERVE_GIB if on_cuda else 0.0, sample_peak_bytes=plain.peak_per_unit,
                          sample_fixed_bytes=max(plain.kept_fixed, plain.peak_fixed), measured_by=plain.method,
                          vae_graphs=on_the_allocator and isinstance(getattr(model, "vae_encoder_moments", None),
                                                                     GraphedEncoder))
    laps.ms.pop("between", None)
    plan.measure_ms = laps.ms
    if plan.cap_gib is not None:
        fit_under_cap(plan)
    return plan


def fit_under_cap(plan: MemoryPlan) -> None:
    """Each phase's cheapest setting under the cap: the VAE plain if the expected samples fit plain with it, else
    checkpointed in the largest chunk that lets them; where none does, in the largest chunk that gives the samples
    the most room (the field's own peak can bind, which checkpointing the VAE does not lower); and the sample
    budget of what is left."""
    rooms = []
    for phase in plan.phases:
        chunks = [None] + _vae_chunks(phase.views)
        fitting = [c for c in chunks if plan.phase_need_gib(phase, c, False) <= plan.cap_gib]
        if fitting:
            phase.vae_checkpoint_views = fitting[0]
        else:
            budgets = [_sample_budget(plan, phase, c)[0] for c in chunks]
            phase.vae_checkpoint_views = chunks[budgets.index(max(budgets))]
        phase.sample_budget, room = _sample_budget(plan, phase, phase.vae_checkpoint_views)
        rooms.append(room)
    if rooms:
        plan.density_chunk = max(int(min(rooms) * 0.5 / plan.bytes_per_sample), 4096)


def _sample_budget(plan: MemoryPlan, phase: PhasePlan, vae_chunk: int | None) -> tuple[int, float]:
    """(samples a step of ``phase`` may evaluate plain, bytes left beside the guidance): what is left beside the
    guidance (VAE, UNet) at the kept bytes a sample, and on their own at the peak bytes, after the expected samples'
    kept bytes under checkpointing; the smallest chunk at least (the plan fits only if that does)."""
    available = plan.cap_gib / SLACK - plan.base_gib - plan.sample_fixed_bytes / GIB
    beside = max(available - phase.vae_gib(vae_chunk) - plan.unet_reserve_gib, 0.0) * GIB
    alone = max(available - plan.vae_held_gib(phase, vae_chunk), 0.0) * GIB
    kept = phase.expected_samples * plan.bytes_per_sample_checkpointed
    budget = min((beside - kept) / plan.bytes_per_sample, (alone - kept) / plan.bytes_per_sample_peak)
    return max(int(budget), MIN_SAMPLE_CHUNK), beside


def preset_that_fits(cap_gib: float, model, device: torch.device, exclude: str | None = None) -> tuple[str, float] | None:
    """(name, estimate GiB) of the largest preset (most steps and largest renders first) that fits ``cap_gib``."""
    from backend.nerf.presets import preset

    for name in ("reference", "fast", "draft"):
        if name == exclude:
            continue
        config = preset(name)
        config.run.max_gpu_memory = cap_gib
        plan = plan_memory(config, model, device)
        if plan.fits:
            return name, plan.estimate_gib
    return None


def refusal(config, plan: MemoryPlan, model, device: torch.device, preset_name: str | None) -> str:
    """The sentence that refuses a run that cannot fit its cap, naming a preset that does."""
    what = f"the '{preset_name}' preset needs" if preset_name else "these settings need"
    sentence = (f"{what} about {plan.need_gib(True):.1f} GiB of GPU memory, more than the "
                f"{plan.cap_gib:.1f} GiB allowed (--max-gpu-memory / run.max_gpu_memory)")
    fitting = preset_that_fits(plan.cap_gib, model, device, exclude=preset_name)
    if fitting is None:
        return sentence + ": no preset fits; lower phases.resolution_after or phases.objects_before"
    return sentence + f": the '{fitting[0]}' preset fits (about {math.ceil(fitting[1] * 10) / 10:.1f} GiB)"
