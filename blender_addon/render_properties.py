"""Per-scene settings of the "Render training views" panel (``scene.iso3d_render``), mirroring RenderSettings."""

import bpy

from .core.render_plan import DEFAULT_FOV_DEG, RenderSettings

_DEFAULTS = RenderSettings()


class Isotropic3DRenderProperties(bpy.types.PropertyGroup):
    resolution: bpy.props.IntProperty(name="Resolution", description="Square image size in pixels",
                                      default=_DEFAULTS.resolution, min=8, max=8192)
    fixed_views: bpy.props.IntProperty(name="Fixed views", description="Azimuths evenly over 360 degrees",
                                       default=_DEFAULTS.fixed_views, min=0, max=1000)
    fixed_elevation: bpy.props.FloatProperty(name="Fixed elevation", description="Elevation of the fixed views (degrees)",
                                             default=_DEFAULTS.fixed_elevation_deg, min=-89.0, max=89.0)
    random_views: bpy.props.IntProperty(name="Random views", description="Views at random elevations",
                                        default=_DEFAULTS.random_views, min=0, max=1000)
    random_elevation_min: bpy.props.FloatProperty(name="Min", description="Lowest random elevation (degrees)",
                                                  default=_DEFAULTS.random_elevation_min_deg, min=-89.0, max=89.0)
    random_elevation_max: bpy.props.FloatProperty(name="Max", description="Highest random elevation (degrees)",
                                                  default=_DEFAULTS.random_elevation_max_deg, min=-89.0, max=89.0)
    distance: bpy.props.FloatProperty(name="Distance", description="Camera distance; the object fits a unit cube",
                                      default=_DEFAULTS.distance, min=0.01, max=100.0)
    fov: bpy.props.FloatProperty(name="Field of view", description="Degrees", default=DEFAULT_FOV_DEG, min=1.0, max=170.0)
    background: bpy.props.EnumProperty(
        name="Background",
        items=[("white", "White", "RGB images on white"), ("transparent", "Transparent", "RGBA images, alpha kept")],
        default=_DEFAULTS.background,
    )
    engine: bpy.props.EnumProperty(name="Engine", items=[("cycles", "Cycles", ""), ("eevee", "EEVEE", "")],
                                   default=_DEFAULTS.engine)
    device: bpy.props.EnumProperty(name="Device", items=[("cpu", "CPU", ""), ("gpu", "GPU", "")],
                                   default=_DEFAULTS.device)
    samples: bpy.props.IntProperty(name="Samples", default=_DEFAULTS.samples, min=1, max=1_000_000)
    denoise: bpy.props.BoolProperty(name="Denoise", default=_DEFAULTS.denoise)
    seed: bpy.props.IntProperty(name="Seed", description="Same seed, same images", default=0, min=0)
    grouping: bpy.props.EnumProperty(
        name="Objects",
        items=[("EACH", "Each selected", "Every selected mesh object is one training object"),
               ("TOGETHER", "Selection as one", "All selected mesh objects form one training object")],
        default="EACH",
    )

    def to_settings(self) -> RenderSettings:
        """The RenderSettings these properties describe (raises RenderSettingsError on a bad combination)."""
        return RenderSettings(
            resolution=self.resolution,
            fixed_views=self.fixed_views,
            fixed_elevation_deg=self.fixed_elevation,
            random_views=self.random_views,
            random_elevation_min_deg=self.random_elevation_min,
            random_elevation_max_deg=self.random_elevation_max,
            distance=self.distance,
            fov_deg=self.fov,
            background=self.background,
            engine=self.engine,
            device=self.device,
            samples=self.samples,
            denoise=self.denoise,
            seed=self.seed,
        )


def register():
    bpy.utils.register_class(Isotropic3DRenderProperties)
    bpy.types.Scene.iso3d_render = bpy.props.PointerProperty(type=Isotropic3DRenderProperties)


def unregister():
    del bpy.types.Scene.iso3d_render
    bpy.utils.unregister_class(Isotropic3DRenderProperties)
