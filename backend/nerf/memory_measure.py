"""What the memory plan (backend.nerf.memory) measures: the bytes a step's field samples and VAE encoder hold.

Two ways, each where it is right:

- **saved tensors** (``saved_tensors_hooks``, any device): the distinct storages autograd saves for the backward,
  on the plain-torch (eager) code. Exact for the eager code that it counts; on a CPU that is the code a run uses;
  on CUDA it counts what the eager VAE encoder keeps while a checkpointed chunk is recomputed (chunks run eager),
  and what checkpointed field samples keep (their inputs and outputs). It sees nothing transient.
- **the allocator** (CUDA): ``torch.cuda.memory_allocated`` / ``max_memory_allocated`` around a forward whose
  outputs are held as the step holds them until its backward, then the backward: ``kept`` is what is still
  allocated after the forward, ``peak`` the most allocated at once over forward and backward (kept, the forward's
  transient buffers, the gradients). Measured on the evaluation the run really uses: the compiled field with the
  fused Triton hash grid and its MLPs under the run's float16 autocast, and nerfacc's packed compositing; the
  model's compiled VAE encoder at the phase's batch and size, under the run's autocast, fed as the guidance feeds
  it. The measured code runs twice and the second run counts (the first compiles and autotunes, whose scratch
  buffers the run's steps do not hold). A measurement that does not fit the device (or a cap an earlier run of
  the process set) falls back to the saved-tensor count.

Two or more counts (samples, views) separate a fixed part from a per-unit part (``separate``): the line through the
extreme counts, raised until no measurement lies above it, so it bounds every measured count from above.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from dataclasses import dataclass
from functools import partial

import torch

# Field samples of the allocator's measurement (two counts: a fixed part and a per-sample part), 8 a ray.
SAMPLE_COUNTS = (1 << 16, 1 << 18)
SAMPLES_A_RAY = 8
COMPOSITING_BYTES = 16 * 4  # saved-tensor count: nerfacc's weights, transmittance, sums, indices (16 values a sample)


@dataclass(frozen=True)
class Footprint:
    """Bytes a part of a step holds: ``fixed + per_unit x units``, kept from its forward to its backward and at its
    peak over forward and backward (kept included). ``method``: "allocator" or "saved tensors"."""

    kept_per_unit: float
    peak_per_unit: float
    kept_fixed: float = 0.0
    peak_fixed: float = 0.0
    method: str = "saved tensors"


def separate(measurements: list[tuple[int, float]]) -> tuple[float, float]:
    """(fixed, per unit) bytes from (units, bytes) at two or more unit counts: the slope between the smallest and
    largest count, its fixed part raised so that no measurement lies above the line; both >= 0 (a negative slope
    or intercept, from rounding, becomes the flat or proportional line above every point)."""
    points = sorted(measurements)
    if len(points) < 2 or points[0][0] == points[-1][0]:
        raise ValueError("separating a fixed from a per-unit part needs two different unit counts")
    (low, low_bytes), (high, high_bytes) = points[0], points[-1]
    per_unit = max((high_bytes - low_bytes) / (high - low), 0.0)
    fixed = max(b - per_unit * n for n, b in points)
    if fixed < 0.0:  # proportional: the steepest ratio bounds every point
        return 0.0, max(b / n for n, b in points)
    return fixed, per_unit


def saved_bytes(fn, exclude: set[int]) -> int:
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


def parameter_storages(module: torch.nn.Module) -> set[int]:
    return {p.untyped_storage().data_ptr() for p in module.parameters()} | {
        b.untyped_storage().data_ptr() for b in module.buffers()}


def allocator_bytes(forward, device: torch.device) -> tuple[int, int]:
    """(kept, peak) bytes above what was allocated before: ``forward()`` makes its inputs, runs, and returns its
    backward (a callable holding the outputs as the step holds them). Resets the device's peak statistics."""
    _settle(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    backward = forward()
    torch.cuda.synchronize(device)
    kept = torch.cuda.memory_allocated(device) - before
    backward()
    del backward
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    _settle(device)
    return kept, peak


def _settle(device: torch.device) -> None:
    gc.collect()
    torch.cuda.synchronize(device)


@contextlib.contextmanager
def measuring_collections():
    """Within: what was alive at entry is frozen (``gc.freeze``, after one full collection), so each measurement's
    collections (``_settle``: four a measurement, 16 in a plan on CUDA) scan only what the measurements made. A full
    collection scans every object of torch, diffusers and the model (~480,000 after the imports alone: ~0.25 s each
    on a 2-core host). At exit they are unfrozen again, unless the caller had frozen objects before (the service
    freezes what survives each job, the test suite what it imported): then they stay frozen."""
    was_frozen = gc.get_freeze_count() > 0
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        if not was_frozen:
            gc.unfreeze()


def measured_twice(forward, device: torch.device) -> tuple[int, int]:
    """``allocator_bytes`` of the second of two runs (the first compiles and autotunes)."""
    allocator_bytes(forward, device)
    return allocator_bytes(forward, device)


def _out_of_memory(device: torch.device) -> None:
    """After a measurement that did not fit: its buffers freed and given back (the caller's fallback stands)."""
    _settle(device)
    torch.cuda.empty_cache()


# Measurements depend on shapes, dtypes and code paths (the key of each), not on the cap: one per process and key, so
# a warm service's jobs (and the warm-up before them, at the default preset's shapes) plan without measuring again;
# the plan's arithmetic over them (backend.nerf.memory: phases, cap, budgets) is redone for every run.
_MEASURED: dict[tuple, object] = {}


def field_footprint(field, renderer_evaluate, device: torch.device, checkpointed: bool) -> Footprint:
    """Bytes per field sample (with normals and diffuse shading, compositing included) that a step holds; on CUDA
    plain samples through the allocator on the field as the run evaluates it (compiled where it is compiled, its
    MLPs under the autocast the trainer set)."""
    compiled = getattr(field, "_compiled_with_normals", None) is not None
    key = ("samples", dataclasses.astuple(field.config), str(device), checkpointed, renderer_evaluate, compiled,
           field.mlp_autocast_dtype)
    if key not in _MEASURED:
        measured = None
        if device.type == "cuda" and not checkpointed:
            measured = _allocator_field_footprint(field, renderer_evaluate, device)
        if measured is not None:
            _MEASURED[key] = measured
        else:  # a CPU, checkpointed samples, or a measurement that did not fit the device (or an earlier run's cap)
            per_sample = _saved_sample_bytes(field, renderer_evaluate, device, checkpointed)
            _MEASURED[key] = Footprint(per_sample, per_sample)
    return _MEASURED[key]


def _sample_inputs(count: int, device: torch.device, generator: torch.Generator):
    points = (torch.rand(count, 3, generator=generator) * 0.8 - 0.4).to(device)
    directions = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator), dim=-1).to(device)
    return points, directions, torch.ones(count, 3, device=device)


def _saved_sample_bytes(field, renderer_evaluate, device: torch.device, checkpointed: bool) -> float:
    from backend.nerf.shading import Lighting

    exclude = parameter_storages(field)
    generator = torch.Generator(device="cpu").manual_seed(0)
    lighting = Lighting("diffuse", 0.5, None)

    def run(count: int) -> int:
        points, directions, light = _sample_inputs(count, device, generator)

        def evaluate():
            density, colour, normals, orientation = renderer_evaluate(field, points, directions, light, lighting,
                                                                      True, checkpointed)
            return density.sum() + colour.sum() + orientation.sum()

        return saved_bytes(evaluate, exclude)

    small, large = 512, 1536
    with field.eager():  # the plain-torch field keeps at least what the compiled one does: an upper bound
        per_sample = (run(large) - run(small)) / (large - small)
    return max(per_sample, 0.0) + COMPOSITING_BYTES


def _allocator_field_footprint(field, renderer_evaluate, device: torch.device) -> Footprint | None:
    """The renderer's packed path on synthetic samples: the sampler's outputs (ray indices, intervals, points,
    directions, lights), the field with normals and shading, nerfacc's compositing; outputs held, then backward."""
    import nerfacc

    from backend.nerf.shading import Lighting

    lighting = Lighting("diffuse", 0.5, None)
    generator = torch.Generator(device="cpu").manual_seed(0)

    def forward(count: int):
        rays = count // SAMPLES_A_RAY
        ray_indices = torch.arange(rays, device=device).repeat_interleave(SAMPLES_A_RAY)
        t_starts = torch.rand(count, generator=generator).to(device)
        t_ends = t_starts + 0.01
        points, directions, light = _sample_inputs(count, device, generator)
        density, colour, normals, orientation = renderer_evaluate(field, points, directions, light, lighting,
                                                                  True, False)
        weights, _, _ = nerfacc.render_weight_from_density(t_starts, t_ends, density, ray_indices=ray_indices,
                                                           n_rays=rays)
        acc = partial(nerfacc.accumulate_along_rays, ray_indices=ray_indices, n_rays=rays)
        rgb, opacity, normal = acc(weights, colour), acc(weights, None), acc(weights, normals)
        orient = acc(weights.detach(), orientation[:, None])
        loss = rgb.square().sum() + opacity.sum() + normal.sum() + orient.sum()
        return loss.backward

    try:
        with torch.enable_grad():
            figures = [(count, measured_twice(partial(forward, count), device)) for count in SAMPLE_COUNTS]
    except torch.OutOfMemoryError:
        return _out_of_memory(device)
    finally:
        field.zero_grad(set_to_none=True)
    kept_fixed, kept = separate([(count, k) for count, (k, _) in figures])
    peak_fixed, peak = separate([(count, p) for count, (_, p) in figures])
    return Footprint(kept, max(peak, kept), kept_fixed, max(peak_fixed, kept_fixed), "allocator")


def vae_bytes_per_view(vae, size: int, device: torch.device, autocast_dtype: torch.dtype | None,
                       checkpointed: bool) -> float:
    """Bytes the eager VAE encoder saves for the backward of one image at size^2 (saved tensors, measured at 64^2
    and scaled by pixels), plain or checkpointed (backend.models.vae.checkpointed_moments), under autocast to
    ``autocast_dtype``."""
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

        _MEASURED[key] = saved_bytes(encode, parameter_storages(vae)) / 2
    return _MEASURED[key] * (size / probe) ** 2


def vae_allocator_footprint(model, views: int, resolution: int, size: int, device: torch.device,
                            autocast_dtype: torch.dtype | None) -> Footprint | None:
    """The run's VAE encoder (the model's compiled one where it has one) on ``views`` renders at resolution^2,
    resized to size^2 and encoded as the guidance does (backend.diffusion.sds.SDSGuidance), under the run's
    autocast; bytes a view (the fixed part shared out among the views). None where it did not fit the device."""
    from backend.diffusion.sds import encoder_images
    from backend.models.graphed_encoder import ungraphed
    from backend.models.vae import encode_latents, encoder_moments

    vae = model.vae
    compiled = ungraphed(getattr(model, "vae_encoder_moments", None))  # a graph's pool holds what this measures
    moments = compiled or partial(encoder_moments, vae)
    # the compiled encoder by identity, the eager one by name (a new partial each call: its id would miss the cache
    # every job, or hit another partial's figure once its address was reused)
    key = ("vae-allocator", id(vae), id(compiled) if compiled is not None else "eager", views, resolution, size,
           str(device), autocast_dtype)
    if key in _MEASURED:
        return _MEASURED[key]

    def forward():
        # the renders as the renderer gives them: [N, H, W, 3] seen as [N, 3, H, W] (channels-last), with gradients
        renders = torch.zeros(views, resolution, resolution, 3, device=device, requires_grad=True)
        renders = renders.permute(0, 3, 1, 2)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            latents = encode_latents(vae, encoder_images(renders, size), None, moments).float()
        return latents.square().sum().backward

    try:
        with torch.enable_grad():
            kept, peak = measured_twice(forward, device)
    except torch.OutOfMemoryError:  # the eager encoder's saved-tensor count (above the compiled one's) stands
        _MEASURED[key] = _out_of_memory(device)
        return None
    _MEASURED[key] = Footprint(kept / views, max(peak, kept) / views, method="allocator")
    return _MEASURED[key]


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
