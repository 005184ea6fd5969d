"""GPU memory of a generation: the estimate at the start, the refusal that names a preset that fits, and the
per-step sample budget that keeps a run under its cap.

The cap is ``run.max_gpu_memory`` (GiB; ``iso3d generate/serve --max-gpu-memory``), or on CUDA with no cap set the
device's total memory. What a step holds is measured on this device with this model and field (autograd's saved
tensors, counted through ``saved_tensors_hooks``), not guessed:

- fixed: the model's weights and buffers, the field's parameters with their gradients and two Adam moments, and
  the VAE encoder's saved activations for the step's views at ``guidance.latent_resolution_input`` (measured for
  one small view and scaled by pixels), plus a reserve for the guidance UNet's inference workspace;
- per field sample: the bytes autograd keeps for the backward of one sample (field with normals, shading and
  compositing), measured as the difference between two batch sizes so constants cancel; and the bytes kept when
  the field is evaluated under activation checkpointing (points, outputs, compositing; the hash-grid
  intermediates are recomputed in the backward).

A step whose samples would need more than the cap leaves evaluates the field in checkpointed chunks of
``sample_budget`` samples (exact gradients, one more field forward); the sampler's no-gradient density queries run
in chunks too. A preset that cannot fit even so is refused at the start with a sentence naming the largest preset
that fits. Estimates are in GiB (2^30 bytes).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

GIB = 2**30
# Field samples per ray assumed at the start (before the field exists): the reference preset's 256^2 steps were
# measured at 5.3-7.6 million samples for 4 x 256^2 rays, 20-29 per ray (issue 18, H200).
EXPECTED_SAMPLES_PER_RAY = 32
# Kept for the guidance UNet's inference (bf16 activations of one batch, CUDA-graph pools) and allocator slack.
UNET_RESERVE_GIB = 1.5
SLACK = 1.10  # the allocator's fragmentation and rounding: 10% over the measured sum


@dataclass
class MemoryPlan:
    """What a run needs (GiB) and how it keeps under ``cap_gib``."""

    cap_gib: float | None
    fixed_gib: float
    bytes_per_sample: float  # kept for the backward, plain evaluation
    bytes_per_sample_checkpointed: float  # kept for the backward under checkpointing
    rays_per_step: int  # the largest phase's rays
    sample_budget: int | None  # samples a step evaluates without checkpointing (None: unlimited)
    density_chunk: int  # samples per no-gradient density query of the sampler

    def need_gib(self, checkpointed: bool) -> float:
        per_sample = self.bytes_per_sample_checkpointed if checkpointed else self.bytes_per_sample
        return SLACK * (self.fixed_gib + self.rays_per_step * EXPECTED_SAMPLES_PER_RAY * per_sample / GIB)

    @property
    def estimate_gib(self) -> float:
        """The expected peak: plain evaluation if it fits under the cap, else checkpointed."""
        plain = self.need_gib(False)
        if self.cap_gib is None or plain <= self.cap_gib:
            return plain
        return self.need_gib(True)

    @property
    def fits(self) -> bool:
        return self.cap_gib is None or self.need_gib(True) <= self.cap_gib


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


def vae_bytes(model, views: int, size: int, device: torch.device, autocast: bool) -> float:
    """Bytes the VAE encoder keeps for the backward of ``views`` images at size^2 (measured at 64^2, scaled)."""
    from backend.models.vae import encode_latents

    probe = 64
    key = ("vae", id(model.vae), next(model.vae.parameters()).dtype, str(device), autocast)
    if key in _MEASURED:
        return _MEASURED[key] * views * (size / probe) ** 2
    images = torch.zeros(1, 3, probe, probe, device=device, requires_grad=True)

    def encode():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            encode_latents(model.vae, images)

    saved = _MEASURED[key] = _saved_bytes(encode, _parameter_storages(model.vae))
    return saved * views * (size / probe) ** 2


def module_bytes(module: torch.nn.Module | None) -> int:
    if module is None:
        return 0
    seen: set[int] = set()
    total = 0
    for tensor in list(module.parameters()) + list(module.buffers()):
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


def plan_memory(config, model, device: torch.device, field=None, renderer_evaluate=None) -> MemoryPlan:
    """The memory plan of ``config`` with ``model`` on ``device`` (the field is built here when not given)."""
    from backend.nerf.field import RadianceField
    from backend.nerf.renderer import evaluate_samples

    device = torch.device(device)
    if field is None:
        with torch.random.fork_rng(devices=[]):
            field = RadianceField(config.field).to(device)
    evaluate = renderer_evaluate or evaluate_samples
    field_state = 4 * module_bytes(field)  # parameters, gradients, Adam's two moments
    ph = config.phases
    views = config.cameras.views_per_object
    autocast = device.type == "cuda" and config.run.mixed_precision
    largest_views = max(ph.objects_before, ph.objects_after) * views
    vae = vae_bytes(model, largest_views, config.guidance.latent_resolution_input, device, autocast)
    rays = max(ph.objects_before * views * ph.resolution_before**2, ph.objects_after * views * ph.resolution_after**2)
    fixed = (model_bytes(model) + field_state + vae) / GIB + (UNET_RESERVE_GIB if device.type == "cuda" else 0.0)
    plain = sample_bytes(field, evaluate, device, checkpointed=False)
    kept = sample_bytes(field, evaluate, device, checkpointed=True)
    cap = device_cap_gib(config, device)
    plan = MemoryPlan(cap, fixed, plain, kept, rays, None, config.renderer.chunk_rays * 64)
    if cap is not None:
        # What the samples may take: the checkpointed samples' kept bytes plus one plain chunk being recomputed.
        room = max(cap / SLACK - fixed, 0.0) * GIB
        expected = rays * EXPECTED_SAMPLES_PER_RAY
        if plan.need_gib(False) > cap:
            room_for_chunk = max(room - expected * kept, room * 0.25)
            plan.sample_budget = max(int(room_for_chunk / plain), 1024)
        plan.density_chunk = max(int(room * 0.5 / plain), 4096)
    return plan


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
