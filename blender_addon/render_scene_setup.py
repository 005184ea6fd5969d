"""The training-view renderer's scene set-up (bpy only), a mixin of ``dataset_render.TrainingViewRenderer``: the
render settings (engine, film, colour management, Cycles device and bounces), the camera, and the HDRI world that
lights each object (one of the HDRIs Blender ships, rotated and scaled per object as its ``ObjectPlan`` says).
Angles in degrees unless named ``*_rad``; world Z up.
"""

from __future__ import annotations

import math
import os

import bpy

from .core.render_plan import ObjectPlan, RenderSettings, RenderSettingsError


WORLD_MAP_RESOLUTION = 256  # pixels of the world's light importance map


def shipped_hdri_folder() -> str:
    """The folder of the world HDRIs that Blender ships (``datafiles/studiolights/world``)."""
    folder = bpy.utils.system_resource("DATAFILES", path=os.path.join("studiolights", "world"))
    if not folder or not os.path.isdir(folder):
        raise RenderSettingsError("this Blender has no studiolights/world HDRI folder to light with")
    return folder


def available_hdris(settings: RenderSettings) -> list[str]:
    """Sorted HDRI file names to draw from: ``settings.hdris`` (checked to exist) or all shipped ones."""
    shipped = sorted(name for name in os.listdir(shipped_hdri_folder()) if name.lower().endswith((".exr", ".hdr")))
    if not settings.hdris:
        return shipped
    missing = [name for name in settings.hdris if name not in shipped]
    if missing:
        raise RenderSettingsError(f"unknown HDRI(s) {', '.join(missing)}; Blender ships {', '.join(shipped)}")
    return sorted(settings.hdris)


def _engine_identifier(engine: str) -> str:
    if engine == "cycles":
        return "CYCLES"
    items = {item.identifier for item in bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items}
    for name in ("BLENDER_EEVEE_NEXT", "BLENDER_EEVEE"):  # 4.2-4.x call it EEVEE_NEXT, 5.x EEVEE
        if name in items:
            return name
    raise RenderSettingsError("this Blender build has no EEVEE engine")


def _enable_cycles_gpu() -> str:
    """Switches Cycles to the first GPU backend with devices; returns its name or raises a clear error."""
    preferences = bpy.context.preferences.addons["cycles"].preferences
    for backend in ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL"):
        try:
            preferences.compute_device_type = backend
        except TypeError:  # backend not compiled into this build
            continue
        preferences.get_devices()
        gpus = [device for device in preferences.devices if device.type == backend]
        if gpus:
            for device in preferences.devices:
                device.use = device.type == backend
            return backend
    raise RenderSettingsError("device gpu: Cycles finds no GPU (OptiX, CUDA, HIP, oneAPI or Metal) here; use cpu")


class RenderSceneSetup:
    """Set-up of ``self.scene`` for ``self.settings`` (done once) and each object's lighting; the renderer holds
    the state (``scene``, ``settings``, ``hdri_folder``, ``gpu_backend``, ``_own_ids``: the datablocks it made)."""

    def _configure_render(self):
        settings, render = self.settings, self.scene.render
        render.engine = _engine_identifier(settings.engine)
        render.resolution_x = render.resolution_y = settings.resolution
        render.resolution_percentage = 100
        render.pixel_aspect_x = render.pixel_aspect_y = 1.0
        # Always a transparent film: a white background is composited after denoising (exactly 255 where the
        # object's alpha is 0), never rendered (the denoiser and the pixel filter speckle a rendered one).
        render.film_transparent = True
        render.use_persistent_data = True  # keep BVH/images/world maps between the views of an object
        render.dither_intensity = 0.0  # exact white background, bit-identical re-renders
        render.threads_mode = "FIXED" if settings.threads else "AUTO"
        if settings.threads:
            render.threads = settings.threads
        image = render.image_settings
        image.file_format = "PNG"
        image.color_mode = "RGBA"
        image.color_depth = "8"
        render.use_file_extension = True
        self.scene.view_settings.view_transform = "Standard"
        self.scene.view_settings.look = "None"
        self.scene.view_settings.exposure = 0.0
        self.scene.view_settings.gamma = 1.0
        if settings.engine == "cycles":
            cycles = self.scene.cycles
            if settings.device == "gpu":
                self.gpu_backend = _enable_cycles_gpu()
            cycles.device = "GPU" if settings.device == "gpu" else "CPU"
            cycles.samples = settings.samples
            cycles.use_denoising = settings.denoise
            cycles.use_animated_seed = False
            # SyncDreamer's bounces: 1 diffuse, 1 glossy, 3 transparent/transmission.
            cycles.max_bounces = 6
            cycles.diffuse_bounces = 1
            cycles.glossy_bounces = 1
            cycles.transparent_max_bounces = 3
            cycles.transmission_bounces = 3
        else:
            self.scene.eevee.taa_render_samples = settings.samples

    def _make_camera(self):
        data = bpy.data.cameras.new("iso3d_render_camera")
        data.lens_unit = "FOV"
        data.sensor_fit = "AUTO"
        data.angle = math.radians(self.settings.fov_deg)
        data.clip_start = 0.01
        data.clip_end = 1000.0
        self.camera = bpy.data.objects.new("iso3d_render_camera", data)
        self.scene.collection.objects.link(self.camera)
        self.scene.camera = self.camera
        self._own_ids += [self.camera, data]

    def _make_world(self):
        """HDRI lighting (the film is transparent: camera rays never show it)."""
        world = bpy.data.worlds.new("iso3d_render_world")
        self._own_ids.append(world)
        if bpy.app.version < (5, 0, 0):
            world.use_nodes = True  # Blender 5 worlds always use nodes (the property is deprecated there)
        self.scene.world = world
        # Importance map of the environment: Blender's automatic size (1024) costs ~4.5 s per HDRI change on
        # one CPU core; 256 keeps the light sampling good at a tenth of that.
        world.cycles.sampling_method = "MANUAL"
        world.cycles.sample_map_resolution = WORLD_MAP_RESOLUTION
        if bpy.app.version < (5, 0, 0):  # a new world has no node tree before 5.0 (always on, deprecated, from 5.0)
            world.use_nodes = True
        tree = world.node_tree
        tree.nodes.clear()
        nodes, links = tree.nodes, tree.links
        coordinates = nodes.new("ShaderNodeTexCoord")
        self.mapping = nodes.new("ShaderNodeMapping")
        self.environment = nodes.new("ShaderNodeTexEnvironment")
        self.hdri_background = nodes.new("ShaderNodeBackground")
        output = nodes.new("ShaderNodeOutputWorld")
        links.new(coordinates.outputs["Generated"], self.mapping.inputs["Vector"])
        links.new(self.mapping.outputs["Vector"], self.environment.inputs["Vector"])
        links.new(self.environment.outputs["Color"], self.hdri_background.inputs["Color"])
        links.new(self.hdri_background.outputs["Background"], output.inputs["Surface"])

    def _set_lighting(self, plan: ObjectPlan):
        image = bpy.data.images.load(os.path.join(self.hdri_folder, plan.hdri), check_existing=True)
        if image not in self._own_ids:
            self._own_ids.append(image)
        self.environment.image = image
        self.mapping.inputs["Rotation"].default_value = (0.0, 0.0, math.radians(plan.hdri_rotation_deg))
        self.hdri_background.inputs["Strength"].default_value = plan.hdri_strength
