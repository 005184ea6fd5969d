"""Typed settings of a generation (field, renderer, shading, guidance, cameras, losses, optimiser, mesh) and the
named presets ``reference``, ``fast`` and ``draft``.

Schedules are given as *fractions of the run's steps*, so a preset keeps its shape when ``--steps`` changes; at the
reference's 10,000 steps they give the paper's step numbers (docs/reference-fidelity.md, "SDS and NeRF system").
Lengths are in world units (the object lives in the cube [-radius, radius]^3, Blender Z-up), angles in degrees,
densities in 1/world-unit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class FieldConfig:
    """Hash-grid field (threestudio ``implicit-volume`` with tcnn's HashGrid)."""

    radius: float = 1.0  # the field lives in [-radius, radius]^3
    levels: int = 16
    features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    per_level_scale: float = 1.447269237440378  # finest level 16 * 1.447^15 ~ 4096
    mlp_width: int = 64
    mlp_hidden_layers: int = 1
    blob_density: float = 10.0  # density bias 10 * (1 - |x| / 0.5) ("blob_magic3d")
    blob_radius: float = 0.5
    normals: str = "analytic"  # exact -grad density in one pass; "finite_difference"; "autograd" (double backward)
    finite_difference_eps: float = 1e-3  # world units; central differences along x, y, z
    compile: bool = True  # torch.compile the field on CUDA (plain torch elsewhere)


@dataclass
class RendererConfig:
    """Volume rendering (nerfacc occupancy grid on CUDA; own batched sampler on CPU)."""

    grid_resolution: int = 32
    grid_update_every: int = 16
    grid_warmup_steps: int = 256
    grid_occupancy_threshold: float = 0.01  # occupancy = density * render_step
    grid_ema_decay: float = 0.95
    render_step: float = 1.732 * 2 / 512  # world units between samples along a ray
    alpha_threshold: float = 0.01  # CUDA: samples with lower alpha are skipped
    cpu_max_samples: int = 512  # CPU sampler: at most this many uniform samples per ray
    chunk_rays: int = 65536  # rays per chunk when rendering without gradients


@dataclass
class ShadingConfig:
    """Albedo for the first part of the run, then soft point-light shading (``diffuse-with-point-light``)."""

    albedo_only_until: float = 0.5  # fraction of steps
    albedo_probability: float = 0.25  # afterwards: albedo with this probability, else 50/50 textureless/diffuse
    textureless_probability: float = 0.5
    light_distance_range: tuple[float, float] = (0.8, 1.5)  # from the origin; "dreamfusion" light sampling


@dataclass
class CameraConfig:
    """Random multi-view SDS cameras (threestudio ``random_multiview``) and the evaluation (preview) cameras."""

    views_per_object: int = 4
    elevation_range: tuple[float, float] = (0.0, 30.0)
    azimuth_range: tuple[float, float] = (0.0, 360.0)
    fovy_range: tuple[float, float] = (15.0, 60.0)
    relative_radius_range: tuple[float, float] = (0.8, 1.0)  # distance = relative_radius / tan(fovy / 2)
    eval_distance: float = 3.0
    eval_fovy: float = 40.0
    eval_elevation: float = 15.0


@dataclass
class PhaseConfig:
    """Render size and batch before and after a switch point (reference: 2 objects x 4 views at 64^2, then 1 x 4
    at 256^2 from step 5000)."""

    switch_at: float = 0.5  # fraction of steps
    objects_before: int = 2
    resolution_before: int = 64
    objects_after: int = 1
    resolution_after: int = 256


@dataclass
class GuidanceConfig:
    """SDS guidance (threestudio ``multiview-diffusion-guidance`` with Isotropic3D's settings)."""

    guidance_scale: float = 10.0
    recon_std_rescale: float = 0.5
    latent_resolution_input: int = 256  # renders are resized bilinearly to this before the VAE
    min_step_start: float = 0.98  # timestep fractions of 1000
    max_step_start: float = 0.98
    min_step_end: float = 0.02
    max_step_end: float = 0.50
    anneal_until: float = 0.8  # fraction of steps over which the range anneals linearly
    camera_encoding: str | None = None  # None: the model's own ("isotropic3d" for the published weights)


@dataclass
class LossConfig:
    lambda_sds: float = 1.0
    lambda_orient_start: float = 10.0
    lambda_orient_end: float = 1000.0
    orient_until: float = 0.5  # fraction of steps over which lambda_orient rises linearly


@dataclass
class OptimizerConfig:
    lr_grid: float = 0.01
    lr_mlp: float = 0.001
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-15
    weight_decay: float = 0.01


@dataclass
class MeshConfig:
    resolution: int = 256  # final mesh: marching-cubes grid cells per axis
    preview_resolution: int = 96  # intermediate meshes
    density_threshold: float = 25.0
    min_component_fraction: float = 0.01  # components with fewer faces than this fraction are dropped
    chunk_points: int = 262144


@dataclass
class RunConfig:
    steps: int = 10000
    seed: int = 22
    mesh_every: int = 500  # intermediate mesh every N steps (0: none)
    views_every: int = 200  # preview renders every N steps (0: none)
    checkpoint_every: int = 500  # optimisation state saved every N steps (and on cancel/failure)
    views_resolution: int = 128  # preview render size
    turntable_views: int = 8
    mixed_precision: bool = True  # bf16 autocast for the VAE and UNet on CUDA
    # GiB of GPU memory the run may use (0: the device's memory); a run that cannot fit is refused at the start,
    # one that fits only so evaluates the field in checkpointed chunks (backend.nerf.memory)
    max_gpu_memory: float = 0.0


@dataclass
class GenerateConfig:
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    renderer: RendererConfig = dataclasses.field(default_factory=RendererConfig)
    shading: ShadingConfig = dataclasses.field(default_factory=ShadingConfig)
    cameras: CameraConfig = dataclasses.field(default_factory=CameraConfig)
    phases: PhaseConfig = dataclasses.field(default_factory=PhaseConfig)
    guidance: GuidanceConfig = dataclasses.field(default_factory=GuidanceConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerateConfig":
        config = cls()
        for section, values in data.items():
            for name, value in values.items():
                set_option(config, f"{section}.{name}", value)
        return config


def reference() -> GenerateConfig:
    """The paper's settings: 10,000 steps (docs/reference-fidelity.md, "SDS and NeRF system"), analytic normals as
    the reference; within 20 GiB of GPU memory (a 24 GB card; backend.nerf.memory)."""
    config = GenerateConfig()
    config.run.max_gpu_memory = 20.0
    return config


def fast() -> GenerateConfig:
    """2,500 steps with the reference's schedule shape; 128^2 renders in the second phase; within 12 GiB of GPU
    memory."""
    config = GenerateConfig()
    config.run = RunConfig(steps=2500, mesh_every=250, views_every=100, checkpoint_every=250, max_gpu_memory=12.0)
    config.phases.resolution_after = 128
    return config


def draft() -> GenerateConfig:
    """600 steps at 64^2 throughout, a smaller hash table: a quick look at the shape."""
    config = GenerateConfig()
    config.run = RunConfig(steps=600, mesh_every=100, views_every=50, checkpoint_every=100, views_resolution=96)
    config.field.log2_hashmap_size = 17
    config.phases.resolution_after = 64
    config.phases.objects_after = 2
    config.mesh.resolution = 160
    config.mesh.preview_resolution = 64
    return config


def tiny() -> GenerateConfig:
    """CPU-sized settings for the demo and tests with the tiny model: 30 steps of 4 views at 32^2, a small field."""
    config = draft()
    config.run = RunConfig(steps=30, mesh_every=10, views_every=10, checkpoint_every=10, views_resolution=48,
                           turntable_views=4)
    config.phases.objects_before = config.phases.objects_after = 1
    config.field.levels, config.field.log2_hashmap_size = 8, 14
    config.field.base_resolution, config.field.per_level_scale = 8, 1.35
    config.renderer.render_step = 0.03
    config.renderer.cpu_max_samples = 96
    config.phases.resolution_before = config.phases.resolution_after = 32
    config.guidance.latent_resolution_input = 64
    config.mesh.resolution, config.mesh.preview_resolution = 64, 32
    config.mesh.density_threshold = 5.0
    return config


PRESETS = {"reference": reference, "fast": fast, "draft": draft, "tiny": tiny}


def preset(name: str) -> GenerateConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


def set_option(config: GenerateConfig, key: str, value: Any) -> None:
    """Set ``section.name`` to ``value`` (strings are parsed to the field's type: '0.5', '15,60', 'true')."""
    section_name, _, name = key.partition(".")
    section = getattr(config, section_name, None)
    if section is None or not dataclasses.is_dataclass(section) or not name:
        raise ValueError(f"unknown setting {key!r}")
    fields = {f.name: f for f in dataclasses.fields(section)}
    if name not in fields:
        raise ValueError(f"unknown setting {key!r}; {section_name} has {', '.join(fields)}")
    setattr(section, name, _coerce(getattr(section, name), value, key))


def _coerce(current: Any, value: Any, key: str) -> Any:
    try:
        if isinstance(current, bool):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(current, tuple):
            items = value.split(",") if isinstance(value, str) else list(value)
            if len(items) != len(current):
                raise ValueError(value)
            return tuple(type(c)(float(v)) if isinstance(c, float) else type(c)(v) for c, v in zip(current, items))
        if isinstance(current, int):
            number = float(value)
            if number != int(number):
                raise ValueError(value)
            return int(number)
        if isinstance(current, float):
            return float(value)
        if current is None:
            return None if value in (None, "", "none", "None") else str(value)
        return type(current)(value)
    except (TypeError, ValueError):
        raise ValueError(f"setting {key}: {value!r} is not a valid {type(current).__name__}") from None


def validate(config: GenerateConfig) -> None:
    """Refuse impossible settings with a message naming the setting."""
    problems = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    run, fld, ph, mesh = config.run, config.field, config.phases, config.mesh
    need(run.steps >= 1, f"run.steps must be at least 1 (got {run.steps})")
    for name in ("mesh_every", "views_every", "checkpoint_every"):
        need(getattr(run, name) >= 0, f"run.{name} must be 0 (never) or positive")
    need(run.views_resolution >= 8, "run.views_resolution must be at least 8 pixels")
    need(run.turntable_views >= 1, "run.turntable_views must be at least 1")
    need(run.max_gpu_memory >= 0, f"run.max_gpu_memory must be 0 (the device's memory) or positive GiB "
         f"(got {run.max_gpu_memory})")
    need(fld.radius > 0, "field.radius must be positive")
    need(fld.levels >= 1 and fld.features_per_level >= 1, "field.levels and field.features_per_level must be >= 1")
    need(10 <= fld.log2_hashmap_size <= 24, "field.log2_hashmap_size must be in 10..24")
    need(fld.base_resolution >= 2 and fld.per_level_scale >= 1.0, "field.base_resolution >= 2, per_level_scale >= 1")
    need(fld.normals in ("finite_difference", "analytic", "autograd"),
         "field.normals must be analytic, finite_difference or autograd")
    need(fld.finite_difference_eps > 0, "field.finite_difference_eps must be positive")
    for name in ("resolution_before", "resolution_after"):
        value = getattr(ph, name)
        need(value >= 8 and value % 8 == 0, f"phases.{name} must be a positive multiple of 8 (got {value})")
    need(ph.objects_before >= 1 and ph.objects_after >= 1, "phases.objects_* must be at least 1")
    need(config.cameras.views_per_object >= 1, "cameras.views_per_object must be at least 1")
    lo, hi = config.cameras.fovy_range
    need(0 < lo <= hi < 180, "cameras.fovy_range must be within (0, 180) degrees")
    need(config.renderer.render_step > 0, "renderer.render_step must be positive")
    need(config.renderer.grid_resolution >= 2, "renderer.grid_resolution must be at least 2")
    need(config.guidance.latent_resolution_input % 8 == 0, "guidance.latent_resolution_input: a multiple of 8")
    g = config.guidance
    need(0 < g.min_step_end <= g.max_step_end < 1 and 0 < g.min_step_start <= g.max_step_start < 1,
         "guidance step fractions must satisfy 0 < min <= max < 1")
    need(mesh.resolution >= 8, f"mesh.resolution must be at least 8 (got {mesh.resolution})")
    need(mesh.preview_resolution >= 8, f"mesh.preview_resolution must be at least 8 (got {mesh.preview_resolution})")
    need(0 <= mesh.min_component_fraction < 1, "mesh.min_component_fraction must be in [0, 1)")
    if problems:
        raise ValueError("invalid settings: " + "; ".join(problems))
