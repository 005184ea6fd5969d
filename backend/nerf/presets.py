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

from backend.diffusion.sds import GuidanceConfig
from backend.errors import SettingsError
from backend.settings import check_bounds, check_value, coerce, section, setting, setting_specs, settings_from_dict, \
    shown_key


MAX_RAYS_PER_STEP = 16 * 4 * 256 * 256  # 16x the reference's second phase (1 object x 4 views at 256^2)


@dataclass
class FieldConfig:
    """Hash-grid field (threestudio ``implicit-volume`` with tcnn's HashGrid)."""

    radius: float = setting(1.0, min=0.01, max=100.0, help="the field lives in [-radius, radius]^3 (world units)")
    levels: int = setting(16, min=1, max=32, help="hash-grid levels")
    features_per_level: int = setting(2, min=1, max=8, help="features per hash-grid level")
    log2_hashmap_size: int = setting(19, min=10, max=24, help="log2 of the hash table size per level")
    base_resolution: int = setting(16, min=2, max=1024, help="coarsest grid resolution")
    per_level_scale: float = setting(1.447269237440378, min=1.0, max=4.0,
                                     help="growth per level (16 * 1.447^15 ~ 4096)")
    mlp_width: int = setting(64, min=8, max=512, help="width of the density/colour MLP")
    mlp_hidden_layers: int = setting(1, min=0, max=8, help="hidden layers of the MLP")
    blob_density: float = setting(10.0, min=0.0, max=1000.0, help="density bias 10 * (1 - |x| / 0.5) (blob_magic3d)")
    blob_radius: float = setting(0.5, min=0.01, max=10.0, help="radius of the density bias (world units)")
    normals: str = setting("analytic", choices=("analytic", "finite_difference", "autograd"),
                           help="analytic: exact -grad density in one pass; autograd: double backward")
    finite_difference_eps: float = setting(1e-3, min=1e-6, max=0.1,
                                           help="world units; central differences along x, y, z")
    compile: bool = setting(True, help="torch.compile the field on CUDA (plain torch elsewhere)")
    encoding: str = setting("auto", choices=("auto", "torch", "triton"),
                            help="hash grid: triton: fused kernels (CUDA); torch: the reference code; auto: triton "
                            "where it can run (CUDA, triton installed), torch elsewhere")
    fused_density: bool = setting(True, help="where the fused encoding runs: densities without gradients (the "
                                  "density filter, occupancy grid, mesh) in one kernel with the density MLP")


@dataclass
class RendererConfig:
    """Volume rendering (nerfacc occupancy grid on CUDA; own batched sampler on CPU)."""

    grid_resolution: int = setting(32, min=2, max=256, help="occupancy grid cells a side")
    grid_update_every: int = setting(16, min=1, max=100_000, help="occupancy grid update every N steps")
    grid_warmup_steps: int = setting(256, min=0, max=1_000_000, help="steps of full occupancy updates")
    grid_occupancy_threshold: float = setting(0.01, min=0.0, max=1.0, help="occupancy = density * render_step")
    grid_ema_decay: float = setting(0.95, min=0.0, max=1.0, help="occupancy grid EMA decay")
    render_step: float = setting(1.732 * 2 / 512, min=1e-4, max=1.0, help="world units between samples on a ray")
    alpha_threshold: float = setting(0.01, min=0.0, max=1.0, help="CUDA: samples with lower alpha are skipped")
    early_stop_eps: float = setting(1e-4, min=0.0, max=1.0,
                                    help="CUDA: a ray stops once its transmittance is below this (the reference's "
                                    "nerfacc default; 0: never)")
    cpu_max_samples: int = setting(512, min=1, max=4096, help="CPU sampler: at most this many samples per ray")
    chunk_rays: int = setting(65536, min=1, max=1 << 20, help="rays per chunk when rendering without gradients")


@dataclass
class ShadingConfig:
    """Albedo for the first part of the run, then soft point-light shading (``diffuse-with-point-light``)."""

    albedo_only_until: float = setting(0.5, min=0.0, max=1.0, help="fraction of steps rendered as albedo only")
    albedo_probability: float = setting(0.25, min=0.0, max=1.0,
                                        help="afterwards: albedo with this probability, else textureless/diffuse")
    textureless_probability: float = setting(0.5, min=0.0, max=1.0, help="textureless share of the shaded renders")
    light_distance_range: tuple[float, float] = setting((0.8, 1.5), min=0.01, max=100.0,
                                                        help="light distance from the origin (dreamfusion sampling)")


@dataclass
class CameraConfig:
    """Random multi-view SDS cameras (threestudio ``random_multiview``) and the evaluation (preview) cameras."""

    views_per_object: int = setting(4, min=1, max=16, help="views rendered per object and step")
    elevation_range: tuple[float, float] = setting((0.0, 30.0), min=-90.0, max=90.0, help="degrees")
    azimuth_range: tuple[float, float] = setting((0.0, 360.0), min=-360.0, max=720.0, help="degrees")
    fovy_range: tuple[float, float] = setting((15.0, 60.0), min=1.0, max=179.0, help="vertical field of view, degrees")
    relative_radius_range: tuple[float, float] = setting((0.8, 1.0), min=0.1, max=10.0,
                                                         help="distance = relative_radius / tan(fovy / 2)")
    eval_distance: float = setting(3.0, min=0.1, max=100.0, help="distance of the preview cameras (world units)")
    eval_fovy: float = setting(40.0, min=1.0, max=179.0, help="field of view of the preview cameras, degrees")
    eval_elevation: float = setting(15.0, min=-90.0, max=90.0, help="elevation of the preview cameras, degrees")


@dataclass
class PhaseConfig:
    """Render size and batch before and after a switch point (reference: 2 objects x 4 views at 64^2, then 1 x 4
    at 256^2 from step 5000)."""

    switch_at: float = setting(0.5, min=0.0, max=1.0, help="fraction of steps at which the phases switch")
    objects_before: int = setting(2, min=1, max=8, help="objects per step before the switch")
    resolution_before: int = setting(64, min=8, max=1024, help="render size before the switch (multiple of 8)")
    objects_after: int = setting(1, min=1, max=8, help="objects per step after the switch")
    resolution_after: int = setting(256, min=8, max=1024, help="render size after the switch (multiple of 8)")


@dataclass
class LossConfig:
    lambda_sds: float = setting(1.0, min=0.0, max=1e6, help="weight of the SDS loss")
    lambda_orient_start: float = setting(10.0, min=0.0, max=1e6, help="orientation loss weight at the start")
    lambda_orient_end: float = setting(1000.0, min=0.0, max=1e6, help="orientation loss weight at orient_until")
    orient_until: float = setting(0.5, min=0.0, max=1.0, help="fraction of steps over which lambda_orient rises")


@dataclass
class OptimizerConfig:
    lr_grid: float = setting(0.01, min=0.0, max=10.0, help="learning rate of the hash grid")
    lr_mlp: float = setting(0.001, min=0.0, max=10.0, help="learning rate of the MLP")
    betas: tuple[float, float] = setting((0.9, 0.99), min=0.0, max=0.999999, help="Adam betas")
    eps: float = setting(1e-15, min=0.0, max=1.0, help="Adam epsilon")
    weight_decay: float = setting(0.01, min=0.0, max=10.0, help="weight decay")


@dataclass
class MeshConfig:
    resolution: int = setting(256, min=8, max=1024, help="final mesh: marching-cubes grid cells per axis over the "
                              "whole box (the coarse pass)")
    refinement: int = setting(2, min=1, max=4, help="final mesh: surface cells split n times per axis, "
                              "coarse-to-fine (effective resolution x n; 1: a single pass)")
    preview_resolution: int = setting(96, min=8, max=512, help="intermediate meshes: grid cells per axis")
    density_threshold: float = setting(25.0, min=0.0, max=1e4, help="surface density (1/world-unit)")
    min_component_fraction: float = setting(0.01, min=0.0, max=0.99,
                                            help="components with fewer faces than this fraction are dropped")
    chunk_points: int = setting(262144, min=1024, max=1 << 24, help="field queries per chunk")


@dataclass
class RunConfig:
    steps: int = setting(10000, min=1, max=100_000, help="optimisation steps")
    seed: int = setting(22, min=0, max=2**31 - 1, help="random seed")
    mesh_every: int = setting(500, min=0, max=100_000, help="intermediate mesh every N steps (0: none)")
    views_every: int = setting(200, min=0, max=100_000, help="preview renders every N steps (0: none)")
    checkpoint_every: int = setting(500, min=0, max=100_000,
                                    help="optimisation state saved every N steps (and on cancel/failure)")
    views_resolution: int = setting(128, min=8, max=1024, help="preview render size (pixels)")
    turntable_views: int = setting(8, min=1, max=64, help="views of the final turntable")
    mixed_precision: bool = setting(True, help="float16 autocast of the VAE, the UNet and the field's MLPs on "
                                   "CUDA, the reference's 16-mixed (backend.diffusion.precision)")
    max_gpu_memory: float = setting(0.0, min=0.0, max=100_000.0,
                                    help="GiB of GPU memory the run may use (0: the device's); a run that cannot fit "
                                    "is refused at the start naming a preset that fits, one that fits only so "
                                    "evaluates the field in checkpointed chunks (backend.nerf.memory)")


@dataclass
class GenerateConfig:
    """The settings of a generation, section by section; wire keys ``section.name`` (``mesh.resolution``)."""

    run: RunConfig = section(RunConfig)
    field: FieldConfig = section(FieldConfig)
    renderer: RendererConfig = section(RendererConfig)
    shading: ShadingConfig = section(ShadingConfig)
    cameras: CameraConfig = section(CameraConfig)
    phases: PhaseConfig = section(PhaseConfig)
    guidance: GuidanceConfig = section(GuidanceConfig)
    loss: LossConfig = section(LossConfig)
    optimizer: OptimizerConfig = section(OptimizerConfig)
    mesh: MeshConfig = section(MeshConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerateConfig":
        """From ``to_dict``'s nested form (a saved ``config.json``); keys unknown to this release are refused."""
        if not isinstance(data, dict) or not all(isinstance(values, dict) for values in data.values()):
            raise SettingsError("a saved generation config must be an object of sections")
        flat = {f"{name}.{key}": value for name, values in data.items() for key, value in values.items()}
        return settings_from_dict(cls(), flat)

    def validate(self) -> None:
        """SettingsError naming the setting, for values out of bounds or settings that contradict each other."""
        check_bounds(self)
        self.guidance.validate()
        for name in ("resolution_before", "resolution_after"):
            value = getattr(self.phases, name)
            if value % 8:
                raise SettingsError(f"setting 'phases.{name}' must be a multiple of 8 (got {value})")
        for name in ("elevation_range", "azimuth_range", "fovy_range", "relative_radius_range"):
            low, high = getattr(self.cameras, name)
            if low > high:
                raise SettingsError(f"setting 'cameras.{name}' must be (low, high) with low <= high")
        for phase in ("before", "after"):  # what one step renders sizes its memory
            rays = getattr(self.phases, f"objects_{phase}") * self.cameras.views_per_object * \
                getattr(self.phases, f"resolution_{phase}") ** 2
            if rays > MAX_RAYS_PER_STEP:
                raise SettingsError(f"settings 'phases.objects_{phase}' x 'cameras.views_per_object' x "
                                    f"'phases.resolution_{phase}'^2 ask for {rays:,} rays a step; at most "
                                    f"{MAX_RAYS_PER_STEP:,}")
        if self.field.encoding == "triton" and self.field.normals == "autograd":
            raise SettingsError("setting 'field.normals' 'autograd' differentiates the hash grid by its positions, "
                                "which the fused encoding ('field.encoding' 'triton') does not: use 'auto' or 'torch'")
        low, high = self.shading.light_distance_range
        if low > high:
            raise SettingsError("setting 'shading.light_distance_range' must be (low, high) with low <= high")


def reference() -> GenerateConfig:
    """The paper's settings: 10,000 steps (docs/reference-fidelity.md, "SDS and NeRF system"), analytic normals as
    the reference. No memory cap of its own: the device's memory bounds the run (backend.nerf.memory), so a card
    with enough memory is never refused; a smaller card adapts or is refused at the start."""
    return GenerateConfig()


def fast() -> GenerateConfig:
    """2,500 steps with the reference's schedule shape; 128^2 renders in the second phase."""
    config = GenerateConfig()
    # an intermediate mesh every 100 steps: the first ~5 s of steps after Generate on an H200 (27 ms on the step
    # path each, bench/between_steps.py: 25 a run, ~0.7 s of ~130 s)
    config.run = RunConfig(steps=2500, mesh_every=100, views_every=100, checkpoint_every=250)
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
    config.mesh.refinement = 1  # a single pass: CPU-cheap
    config.mesh.density_threshold = 5.0
    return config


PRESETS = {"reference": reference, "fast": fast, "draft": draft, "tiny": tiny}


DEFAULT_PRESET = "fast"


def preset(name: str) -> GenerateConfig:
    if name not in PRESETS:
        raise SettingsError(f"unknown preset {shown_key(name)}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


def set_option(config: GenerateConfig, key: str, value: Any) -> None:
    """Set ``section.name`` to ``value`` (text is parsed to the setting's type: '0.5', '15,60', 'true'), in place,
    checking the value's type and bounds (settings that must agree with each other are checked by ``validate``)."""
    spec = setting_specs(GenerateConfig).get(key)
    if spec is None:
        raise SettingsError(f"unknown setting {shown_key(key)}")
    value = coerce(spec, value)
    check_value(spec, value)
    section_name, name = spec.path
    setattr(getattr(config, section_name), name, value)


def validate(config: GenerateConfig) -> None:
    """Refuse impossible settings with a message naming the setting (SettingsError, a ValueError)."""
    config.validate()
