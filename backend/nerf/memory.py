"""GPU memory of a generation: the estimate at the start, phase by phase, the refusal that names a preset that
fits, and what adapts under a cap (the VAE encoder and the field under activation checkpointing).

The cap is ``run.max_gpu_memory`` (GiB; ``iso3d generate/serve --max-gpu-memory``), or on CUDA with no cap set the
device's total memory. A phase's step (phase 1: ``objects_before`` x views at ``resolution_before``^2, then phase 2)
holds, measured on this device with this model and field (autograd's saved tensors, counted through
``saved_tensors_hooks``), not guessed:

- base: the model's weights and buffers, the field's parameters with their gradients and two Adam moments, and on
  CUDA ``UNET_RESERVE_GIB`` for the guidance UNet's inference workspace and CUDA-graph pools (not measured here);
- VAE: the encoder's saved activations for the phase's views at ``guidance.latent_resolution_input`` (measured for
  one small image under the run's autocast, scaled by pixels); under checkpointing (backend.models.vae
  .checkpointed_moments) only the chunks' inputs and outputs are kept, plus one chunk's activations recomputed in
  the backward;
- samples: the phase's rays x ``SAMPLES_PER_RAY`` (measured maxima, below) x the bytes autograd keeps for one field
  sample (field with normals, shading, compositing; measured on the plain-torch field, an upper bound of the
  compiled one) or, under checkpointing, the bytes kept for one sample (points, outputs, compositing).

The phase's need is ``SLACK`` x (base + VAE + samples); the run's estimate is the larger phase's. Under a cap each
phase takes the cheapest setting that fits: plain; else the VAE encoder checkpointed in chunks of half the views,
a quarter, ..., one view (one more encoder forward a step); and always a sample budget: a step whose samples exceed
what is left evaluates the field in checkpointed chunks of that many samples (exact gradients, one more field
forward), which guards a step with more samples than expected. A run that cannot fit even with everything
checkpointed is refused at the start with a sentence naming the largest preset that fits. Estimates are in GiB
(2^30 bytes).

Measured against the estimate (bench/generate.py, 600-step trajectories, one H200, 2026-12-02, commit 2d01841,
bench/results/generate_h200_2026-12-02_baseline.json): peaks fast 14.73 GiB (phase 1), reference 17.78 GiB
(phase 2); this plan's estimates are about 10-25% above them (docs/performance.md, "GPU memory").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field as dataclass_field
from functools import partial

import torch

GIB = 2**30
# Field samples per ray the plan expects, the maxima measured (bench/generate.py, 600-step trajectories of fast and
# reference, one H200, 2026-12-02, bench/results/generate_h200_2026-12-02_baseline.json):
# - the phase that starts the run: 1,252,188 samples for 2 x 4 views at 64^2 (38.2 a ray; median 317,639, 9.7 a
#   ray): the first steps, before the occupancy grid prunes the initial density blob;
# - a later phase: 599,655 for 4 x 128^2 (9.2 a ray; median 5.6) and 2,332,211 for 4 x 256^2 (8.9; median 5.4).
# More samples than this in a step are not an error: the sample budget evaluates them in checkpointed chunks.
SAMPLES_PER_RAY_FIRST_PHASE = 40
SAMPLES_PER_RAY_LATER_PHASE = 10
# Kept for the guidance UNet's inference (activations of one [uncond; cond] batch, the CUDA-graph pools): not
# measured by the plan; with it the estimates above sit 10-25% over the measured peaks.
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
    vae_gib_per_view: float  # kept for the backward, plain encoder
    vae_checkpointed_gib_per_view: float  # kept under checkpointing (chunk inputs and outputs)
    vae_checkpoint_views: int | None = None  # the VAE encoder checkpointed in chunks of this many views (None: plain)
    sample_budget: int | None = None  # samples a step evaluates without checkpointing (None: unlimited)

    def vae_gib(self, chunk: int | None) -> float:
        if chunk is None:
            return self.views * self.vae_gib_per_view
        # kept for every view, and one chunk's activations while it is recomputed in the backward
        return self.views * self.vae_checkpointed_gib_per_view + min(chunk, self.views) * self.vae_gib_per_view


@dataclass
class MemoryPlan:
    """What a run needs (GiB) phase by phase and how each phase keeps under ``cap_gib``."""

    cap_gib: float | None
    base_gib: float  # weights, field state, UNet reserve
    bytes_per_sample: float  # kept for the backward, plain evaluation
    bytes_per_sample_checkpointed: float  # kept for the backward under checkpointing
    phases: list[PhasePlan] = dataclass_field(default_factory=list)  # the phases that run
    density_chunk: int = 1 << 22  # samples per no-gradient density query of the sampler

    def phase(self, number: int) -> PhasePlan | None:
        return next((p for p in self.phases if p.number == number), None)

    def phase_need_gib(self, phase: PhasePlan, vae_chunk: int | None, checkpointed_samples: bool) -> float:
        """The phase's need with the VAE encoder checkpointed in chunks of ``vae_chunk`` views (None: plain) and
        the field samples plain or checkpointed (then one smallest chunk of plain samples being recomputed)."""
        if checkpointed_samples:
            samples = phase.expected_samples * self.bytes_per_sample_checkpointed + \
                MIN_SAMPLE_CHUNK * self.bytes_per_sample
        else:
            samples = phase.expected_samples * self.bytes_per_sample
        return SLACK * (self.base_gib + phase.vae_gib(vae_chunk) + samples / GIB)

    def need_gib(self, checkpointed: bool) -> float:
        """The run's need: plain (False) or with everything checkpointed (True, the least it can take)."""
        return max((self.phase_need_gib(p, 1 if checkpointed else None, checkpointed) for p in self.phases),
                   default=SLACK * self.base_gib)

    def phase_estimate_gib(self, phase: PhasePlan) -> float:
        """The phase's expected peak under its settings (the samples plain up to the budget)."""
        plain = self.phase_need_gib(phase, phase.vae_checkpoint_views, False)
        if phase.sample_budget is None or phase.sample_budget >= phase.expected_samples:
            return plain
        kept = self.phase_need_gib(phase, phase.vae_checkpoint_views, True)
        return kept + SLACK * (phase.sample_budget - MIN_SAMPLE_CHUNK) * self.bytes_per_sample / GIB

    @property
    def estimate_gib(self) -> float:
        """The expected peak of the run: the largest phase's."""
        return max((self.phase_estimate_gib(p) for p in self.phases), default=SLACK * self.base_gib)

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
                         f"VAE {vae}: {self.phase_estimate_gib(p):.1f} GiB")
        return "\n".join(lines)


def _saved_bytes(fn, exclude: set[int]) -> int:
    """Bytes of the distinct storages autograd saves while ``fn()`` runs (storages in ``exclude`` not counted)."""
    seen: set[int] = set()
    total = 0

    def pack(tensor: torch.Tensor):
        nonlocal total
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in seen and key not in exclude:
            seen.add(key)
            total += storage.nbytes()
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return total


def _parameter_storages(module: torch.nn.Module) -> set[int]:
    return {p.untyped_storage().data_ptr() for p in module.parameters()} | {
        b.untyped_storage().data_ptr() for b in module.buffers()}


_MEASURED: dict[tuple, float] = {}  # measurements depend on shapes and dtypes only: one per process and key


def sample_bytes(field, renderer_evaluate, device: torch.device, checkpointed: bool) -> float:
    """Bytes kept for the backward per field sample (with normals and diffuse shading), measured on ``device``."""
    key = ("samples", dataclasses.astuple(field.config), str(device), checkpointed, renderer_evaluate)
    if key not in _MEASURED:
        _MEASURED[key] = _sample_bytes(field, renderer_evaluate, device, checkpointed)
    return _MEASURED[key]


def _sample_bytes(field, renderer_evaluate, device: torch.device, checkpointed: bool) -> float:
    from backend.nerf.shading import Lighting

    exclude = _parameter_storages(field)
    generator = torch.Generator(device="cpu").manual_seed(0)
    lighting = Lighting("diffuse", 0.5, None)

    def run(count: int) -> int:
        points = (torch.rand(count, 3, generator=generator) * 0.8 - 0.4).to(device)
        directions = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator), dim=-1).to(device)
        light = torch.ones(count, 3, device=device)

        def evaluate():
            density, colour, normals, orientation = renderer_evaluate(field, points, directions, light, lighting,
                                                                      True, checkpointed)
            return density.sum() + colour.sum() + orientation.sum()

        return _saved_bytes(evaluate, exclude)

    small, large = 512, 1536
    with field.eager():  # the plain-torch field keeps at least what the compiled one does: an upper bound
        per_sample = (run(large) - run(small)) / (large - small)
    # compositing (nerfacc's weights, transmittance, cumulative sums, accumulation indices): about 16 values a sample
    return max(per_sample, 0.0) + 16 * 4


def vae_bytes_per_view(vae, size: int, device: torch.device, autocast_dtype: torch.dtype | None,
                       checkpointed: bool) -> float:
    """Bytes the VAE encoder keeps for the backward of one image at size^2 (measured at 64^2 and scaled by pixels),
    plain or checkpointed (backend.models.vae.checkpointed_moments), under autocast to ``autocast_dtype``."""
    from backend.models.vae import checkpointed_moments, encode_latents, encoder_moments

    probe = 64
    key = ("vae", id(vae), next(vae.parameters()).dtype, str(device), autocast_dtype, checkpointed)
    if key not in _MEASURED:
        images = torch.zeros(2, 3, probe, probe, device=device, requires_grad=True)
        moments = partial(encoder_moments, vae)
        if checkpointed:
            moments = checkpointed_moments(moments, 1)

        def encode():
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                encode_latents(vae, images, None, moments)

        _MEASURED[key] = _saved_bytes(encode, _parameter_storages(vae)) / 2
    return _MEASURED[key] * (size / probe) ** 2


def module_bytes(module: torch.nn.Module | None) -> int:
    if module is None:
        return 0
    seen: set[int] = set()
    total = 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.is_meta:  # a model built without memory (the estimate printed on a CPU): its would-be bytes
            total += tensor.numel() * tensor.element_size()
            continue
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


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


def _phases(config, vae_plain: float, vae_kept: float) -> list[PhasePlan]:
    """The phases that run (a phase of no steps is left out); the first one starts from the initial blob."""
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
        phases.append(PhasePlan(number, count, views, rays, rays * per_ray, vae_plain / GIB, vae_kept / GIB))
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
    """The memory plan of ``config`` with ``model`` on ``device`` (the field is built here when not given).

    ``planned_for``: the device type the plan is for when measured on another (bench/memory_plan.py: "cuda"
    measured on a CPU adds the UNet reserve; the VAE is then measured in the CPU's float32, above CUDA's float16
    autocast)."""
    from backend.diffusion.precision import guidance_autocast_dtype
    from backend.nerf.field import RadianceField
    from backend.nerf.renderer import evaluate_samples

    device = torch.device(device)
    if field is None:
        with torch.random.fork_rng(devices=[]):
            field = RadianceField(config.field).to(device)
    evaluate = renderer_evaluate or evaluate_samples
    field_state = 4 * module_bytes(field)  # parameters, gradients, Adam's two moments
    autocast = None
    if device.type == "cuda" and config.run.mixed_precision:
        autocast = guidance_autocast_dtype(next(model.vae.parameters()).dtype)
    size = config.guidance.latent_resolution_input
    vae_plain = vae_bytes_per_view(model.vae, size, device, autocast, checkpointed=False)
    vae_kept = vae_bytes_per_view(model.vae, size, device, autocast, checkpointed=True)
    on_cuda = (planned_for or device.type) == "cuda"
    base = (model_bytes(model) + field_state) / GIB + (UNET_RESERVE_GIB if on_cuda else 0.0)
    plain = sample_bytes(field, evaluate, device, checkpointed=False)
    kept = sample_bytes(field, evaluate, device, checkpointed=True)
    plan = MemoryPlan(device_cap_gib(config, device), base, plain, kept, _phases(config, vae_plain, vae_kept),
                      density_chunk=config.renderer.chunk_rays * 64)
    if plan.cap_gib is not None:
        _fit_under_cap(plan)
    return plan


def _fit_under_cap(plan: MemoryPlan) -> None:
    """Each phase's cheapest setting under the cap: the VAE plain if the expected samples fit plain with it, else
    checkpointed in the largest chunk that lets them (one view at least); and the sample budget of what is left."""
    cap, rooms = plan.cap_gib, []
    for phase in plan.phases:
        for chunk in [None] + _vae_chunks(phase.views):
            phase.vae_checkpoint_views = chunk
            if plan.phase_need_gib(phase, chunk, False) <= cap:
                break
        # What the samples may take: the checkpointed samples' kept bytes plus one plain chunk being recomputed.
        room = max(cap / SLACK - plan.base_gib - phase.vae_gib(phase.vae_checkpoint_views), 0.0) * GIB
        room_for_chunk = max(room - phase.expected_samples * plan.bytes_per_sample_checkpointed, room * 0.25)
        phase.sample_budget = max(int(room_for_chunk / plan.bytes_per_sample), MIN_SAMPLE_CHUNK)
        rooms.append(room)
    if rooms:
        plan.density_chunk = max(int(min(rooms) * 0.5 / plan.bytes_per_sample), 4096)


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
