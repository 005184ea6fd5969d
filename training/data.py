"""Training samples over rendered objects, and the cache of their VAE latents and CLIP embeddings.

A sample is one object with
- an *input view* drawn from the object's random-view set (fixed set when it has none): its CLIP embedding is the
  conditioning and, in stage 2, its clean latent is the reference frame;
- *target views* from the fixed-view set: either 4 orthogonal views (the multi-view branch; views k, k+n/4, k+n/2,
  k+3n/4 of the n fixed azimuths) or one view (the single-view branch). The branch is drawn once per optimizer
  step (all samples of a step share it), with probability ``multiview_probability`` for the multi-view branch.

Every random choice of a sample (object, views, diffusion timestep and noise, posterior noise, conditioning drop)
is a pure function of (seed, step, global sample index), so a run resumes exactly and gives the same samples on
any number of processes for the same global batch.

Images are loaded as [-1, 1] RGB on white (RGBA is composited over white, as the reference does); the input view's
conditioning image is prepared as generation prepares the user's image (``load_condition_image``). Latents are kept
as VAE posterior *moments* (mean and log-variance, [8, h, w]) and sampled per use: latent = (mean + std * noise) *
0.18215, the reference's posterior sample, so a cache does not freeze one posterior sample.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from backend.models.configs import DEFAULT_CAMERA_ENCODING
from backend.models.schedule import NUM_TRAIN_TIMESTEPS
from blender_addon.core.atomic_files import atomic_path
from training.render_records import RECORD_FILE, DatasetError, RenderedObject, ViewRecord, camera_codes

CACHE_FORMAT = "iso3d-train-cache/1"
MULTIVIEW_TARGETS = 4
LATENT_DOWNSAMPLING = 8
# Independent random streams of one sample, mixed into its seed.
_STREAM_BRANCH, _STREAM_ORDER, _STREAM_SAMPLE = 1, 2, 3


@dataclass(frozen=True)
class SampleSettings:
    """How samples are drawn. ``multiview_probability``: share of steps in the 4-view branch (paper: 0.7);
    ``condition_drop_probability``: share of samples whose conditioning is dropped (zeros) for classifier-free
    guidance; ``camera_encoding``: the model camera code (backend.diffusion.cameras)."""

    seed: int = 0
    multiview_probability: float = 0.7
    condition_drop_probability: float = 0.1
    camera_encoding: str = DEFAULT_CAMERA_ENCODING

    def __post_init__(self):
        if not 0.0 <= self.multiview_probability <= 1.0:
            raise DatasetError("multiview probability must be between 0 and 1")
        if not 0.0 <= self.condition_drop_probability <= 1.0:
            raise DatasetError("conditioning drop probability must be between 0 and 1")


def _rng(*words: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(w) & 0xFFFFFFFF for w in words])))


def step_target_views(settings: SampleSettings, step: int) -> int:
    """Number of target views of every sample of optimizer step ``step``: 4 (multi-view branch) or 1."""
    draw = _rng(settings.seed, _STREAM_BRANCH, step).random()
    return MULTIVIEW_TARGETS if draw < settings.multiview_probability else 1


def check_objects(objects: list[RenderedObject], settings: SampleSettings) -> tuple[int, int]:
    """Checks that every object can give samples; returns the image (height, width), common to all objects."""
    sizes = set()
    for obj in objects:
        if not obj.fixed_views:
            raise DatasetError(f"{obj.folder}: no fixed-view set to take target views from")
        if settings.multiview_probability > 0 and len(obj.fixed_views) % MULTIVIEW_TARGETS:
            raise DatasetError(
                f"{obj.folder}: {len(obj.fixed_views)} fixed views cannot give 4 orthogonal views "
                "(render a multiple of 4 fixed views, or set the multi-view probability to 0)"
            )
        sizes.add(obj.resolution)
    sizes.discard(None)
    if len(sizes) > 1:
        raise DatasetError(f"objects were rendered at different resolutions ({sorted(sizes)}); use one resolution")
    first = objects[0]
    with Image.open(first.image_path(first.fixed_views[0])) as image:
        width, height = image.size
    if width % LATENT_DOWNSAMPLING or height % LATENT_DOWNSAMPLING:
        raise DatasetError(f"images of {width}x{height} pixels: both sides must be multiples of {LATENT_DOWNSAMPLING}")
    return height, width


def load_image(path: Path) -> torch.Tensor:
    """A rendered view as [3, H, W] float32 in [-1, 1]; RGBA is composited over white."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA") or "transparency" in image.info:
                rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
                rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
            else:
                rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: unreadable image ({error})") from None
    return torch.from_numpy(rgb).permute(2, 0, 1).mul(2.0).sub(1.0).contiguous()


def load_condition_image(path: Path) -> torch.Tensor:
    """A view as the image encoder's conditioning input: [3, 256, 256] float32 in [-1, 1], prepared exactly as
    generation prepares the user's image (backend.imaging.prepare_condition_image), so the model is fine-tuned on
    the conditioning it will be given."""
    from backend.imaging import prepare_condition_image

    try:
        with Image.open(path) as image:
            image.load()
            return prepare_condition_image(image)[0]
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: unreadable image ({error})") from None


# ------------------------------------------------------------------------------------------------------------------
# Cache of VAE posterior moments and CLIP embeddings, one safetensors file per object
# ------------------------------------------------------------------------------------------------------------------


def module_fingerprint(module: torch.nn.Module) -> str:
    """A short hash of a module's weights (shapes and leading values of every tensor): tells caches apart."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().reshape(-1)[:64].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def record_fingerprint(obj: RenderedObject) -> str:
    return hashlib.sha256((obj.folder / RECORD_FILE).read_bytes()).hexdigest()[:16]


def cache_file(cache_dir: Path, obj: RenderedObject) -> Path:
    return Path(cache_dir) / f"{obj.object_id}.safetensors"


def cache_fingerprints(model) -> dict[str, str]:
    """The weights a cache depends on: the VAE and the image encoder."""
    return {"vae": module_fingerprint(model.vae), "image_encoder": module_fingerprint(model.image_encoder)}


@torch.no_grad()
def latent_moments(vae, images: torch.Tensor) -> torch.Tensor:
    """VAE posterior moments [N, 2*C, h, w] (mean, then log-variance) of images [N, 3, H, W] in [-1, 1]."""
    return vae.encode(images.to(device=vae.device, dtype=vae.dtype)).latent_dist.parameters.float()


def sample_latents(moments: torch.Tensor, noise: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """Scaled posterior samples (mean + std * noise) * scaling_factor; moments [..., 2C, h, w], noise [..., C, h, w]."""
    mean, logvar = moments.chunk(2, dim=-3)
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    return (mean + std * noise) * scaling_factor


@torch.no_grad()
def write_object_cache(model, obj: RenderedObject, cache_dir: Path, fingerprints: dict, batch_size: int = 16) -> Path:
    """Encodes every view of one object and writes its cache file atomically."""
    from safetensors.torch import save_file

    tensors = {}
    for name, views in (("fixed", obj.fixed_views), ("random", obj.random_views)):
        moments, embeddings = [], []
        for start in range(0, len(views), batch_size):
            chunk = views[start : start + batch_size]
            images = torch.stack([load_image(obj.image_path(v)) for v in chunk])
            moments.append(latent_moments(model.vae, images).cpu())
            if name == "random" or not obj.random_views:
                conditions = torch.stack([load_condition_image(obj.image_path(v)) for v in chunk])
                embeddings.append(model.encode_image(conditions)[:, 0].float().cpu())
        tensors[f"{name}_moments"] = torch.cat(moments) if moments else torch.zeros(0)
        if embeddings:
            tensors["input_embeddings"] = torch.cat(embeddings)
    path = cache_file(cache_dir, obj)
    metadata = {"format": CACHE_FORMAT, "record": record_fingerprint(obj), **fingerprints}
    with atomic_path(path) as temporary:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(temporary), metadata=metadata)
    return path


def check_cache(objects: list[RenderedObject], cache_dir: Path, fingerprints: dict) -> None:
    """Raises DatasetError unless every object has a cache file made from its current render and these weights."""
    from safetensors import safe_open

    missing, stale = [], []
    for obj in objects:
        path = cache_file(cache_dir, obj)
        if not path.is_file():
            missing.append(obj.object_id)
            continue
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except Exception:  # noqa: BLE001 - a truncated or foreign file
            stale.append(obj.object_id)
            continue
        wanted = {"format": CACHE_FORMAT, "record": record_fingerprint(obj), **fingerprints}
        if any(metadata.get(k) != v for k, v in wanted.items()):
            stale.append(obj.object_id)
    if missing or stale:
        parts = []
        if missing:
            parts.append(f"{len(missing)} object(s) not cached (e.g. {missing[0]})")
        if stale:
            parts.append(f"{len(stale)} cache file(s) made from another render or other weights (e.g. {stale[0]})")
        raise DatasetError(f"cache {cache_dir}: {'; '.join(parts)}: run `iso3d-train cache` with the same --data/--init")


# ------------------------------------------------------------------------------------------------------------------
# Samples
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleKey:
    """Identifies one sample: optimizer step, index in the step's global batch, and the step's target count."""

    step: int
    index: int
    global_batch: int
    target_views: int


class TrainingSamples(torch.utils.data.Dataset):
    """``samples[key]`` -> dict of tensors for one sample (see module doc); index it with ``SampleKey``.

    Keys: ``targets`` [F, 3, H, W] images or [F, 2C, h, w] moments; ``input`` [3, H, W] image or [2C, h, w]
    moments; ``condition`` [3, 256, 256] the input view as the image encoder's input (uncached only, see
    ``load_condition_image``); ``input_embedding`` [D] (cached only); ``cameras`` [F, 16]; ``timestep`` [];
    ``noise`` [F, C, h, w];
    ``posterior_noise`` [F + 1, C, h, w] (targets, then the input view); ``drop_condition`` [] bool;
    ``target_indices`` [F] and ``input_index`` [] (view indices in their sets).
    """

    def __init__(
        self,
        objects: list[RenderedObject],
        settings: SampleSettings,
        image_size: tuple[int, int],
        latent_channels: int = 4,
        cache_dir: Path | None = None,
    ):
        self.objects = objects
        self.settings = settings
        self.latent_shape = (latent_channels, image_size[0] // LATENT_DOWNSAMPLING, image_size[1] // LATENT_DOWNSAMPLING)
        self.cache_dir = Path(cache_dir) if cache_dir else None

    def __len__(self) -> int:
        return len(self.objects)

    @lru_cache(maxsize=2)
    def _epoch_order(self, epoch: int) -> np.ndarray:
        return _rng(self.settings.seed, _STREAM_ORDER, epoch).permutation(len(self.objects))

    def object_index(self, key: SampleKey) -> int:
        """Objects are visited in a fresh random order every epoch (each object once per epoch)."""
        position = key.step * key.global_batch + key.index
        epoch, offset = divmod(position, len(self.objects))
        return int(self._epoch_order(epoch)[offset])

    def __getitem__(self, key: SampleKey) -> dict[str, torch.Tensor]:
        obj = self.objects[self.object_index(key)]
        rng = _rng(self.settings.seed, _STREAM_SAMPLE, key.step, key.index)
        inputs = obj.random_views or obj.fixed_views
        input_position = int(rng.integers(len(inputs)))
        fixed = obj.fixed_views
        if key.target_views == MULTIVIEW_TARGETS:
            spacing = len(fixed) // MULTIVIEW_TARGETS
            first = int(rng.integers(spacing))
            target_positions = [first + k * spacing for k in range(MULTIVIEW_TARGETS)]
        else:
            target_positions = [int(rng.integers(len(fixed)))]
        timestep = int(rng.integers(NUM_TRAIN_TIMESTEPS))
        drop = bool(rng.random() < self.settings.condition_drop_probability)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        frames = len(target_positions)
        noise = torch.randn((frames, *self.latent_shape), generator=generator)
        posterior_noise = torch.randn((frames + 1, *self.latent_shape), generator=generator)
        targets: list[ViewRecord] = [fixed[p] for p in target_positions]
        sample = {
            "cameras": camera_codes(targets, self.settings.camera_encoding),
            "timestep": torch.tensor(timestep),
            "noise": noise,
            "posterior_noise": posterior_noise,
            "drop_condition": torch.tensor(drop),
            "target_indices": torch.tensor([v.index for v in targets]),
            "input_index": torch.tensor(inputs[input_position].index),
        }
        if self.cache_dir is None:
            sample["targets"] = torch.stack([load_image(obj.image_path(v)) for v in targets])
            sample["input"] = load_image(obj.image_path(inputs[input_position]))
            sample["condition"] = load_condition_image(obj.image_path(inputs[input_position]))
        else:
            from safetensors import safe_open

            with safe_open(str(cache_file(self.cache_dir, obj)), framework="pt") as handle:
                fixed_moments = handle.get_slice("fixed_moments")
                sample["targets"] = torch.cat([fixed_moments[p : p + 1] for p in target_positions])
                input_set = "random_moments" if obj.random_views else "fixed_moments"
                sample["input"] = handle.get_slice(input_set)[input_position : input_position + 1][0]
                sample["input_embedding"] = handle.get_slice("input_embeddings")[input_position : input_position + 1][0]
        return sample


def collate_samples(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {name: torch.stack([s[name] for s in samples]) for name in samples[0]}


class RankBatches(torch.utils.data.Sampler):
    """Yields, for steps ``start_step`` .. ``total_steps - 1`` and each of ``accumulation`` micro-steps, the keys
    of this rank's micro-batch. Global sample index = micro * world * batch + rank * batch + j, so the global
    batch of a step is the same set of samples for any split over processes and micro-steps.
    ``repeat_first_step``: every step gets step 0's samples (a fixed batch to overfit)."""

    def __init__(self, settings: SampleSettings, batch_size: int, accumulation: int, rank: int, world_size: int,
                 start_step: int, total_steps: int, repeat_first_step: bool = False):
        self.settings = settings
        self.repeat_first_step = repeat_first_step
        self.batch_size, self.accumulation = batch_size, accumulation
        self.rank, self.world_size = rank, world_size
        self.start_step, self.total_steps = start_step, total_steps

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.accumulation * self.world_size

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step) * self.accumulation

    def __iter__(self) -> Iterator[list[SampleKey]]:
        for step in range(self.start_step, self.total_steps):
            if self.repeat_first_step:  # debugging: the same global batch every step (overfitting must work)
                step = 0
            views = step_target_views(self.settings, step)
            for micro in range(self.accumulation):
                first = (micro * self.world_size + self.rank) * self.batch_size
                yield [SampleKey(step, first + j, self.global_batch, views) for j in range(self.batch_size)]


def describe(objects: list[RenderedObject]) -> str:
    fixed = sorted({len(o.fixed_views) for o in objects})
    random = sorted({len(o.random_views) for o in objects})
    return f"{len(objects)} objects, fixed views {fixed}, random views {random}"

