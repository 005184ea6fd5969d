"""Multi-view training-data renderer (bpy only): one render scene reused for many objects.

Used by the add-on's "Render training views" operator (on copies of the selected objects) and, headless, by
``training/render_cli.py`` worker processes (on imported files). Per object: import or copy into the render
scene, turn it to Z up (the importer's axis conversion or ``up_axis``) and normalise it (unit box or sphere) at
the origin, light with a randomly rotated and scaled HDRI from the ones Blender ships, render the fixed and
random view sets on a transparent film and composite them over the exact background after denoising, write
``cameras.json`` (conventions and the source file's ``file_to_world`` in ``render_plan``, quality flags), then
check the whole folder and publish it with one atomic rename (``render_staging``) so that no half-written object
ever looks finished. Units: Blender units, angles in degrees unless named ``*_rad``; world Z up.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import bpy
import mathutils
import numpy as np

from .core.atomic_files import write_json_atomically
from .core.render_plan import (
    OBJECT_EXTENSIONS,
    RECORD_FILE,
    ObjectPlan,
    RenderSettings,
    RenderSettingsError,
    camera_to_world,
    file_axes_to_world,
    likely_z_up,
    normalization_transform,
    object_record,
    outside_frame_fraction,
    plan_object,
    verify_object_folder,
)
from .core.render_staging import PublishError, StagingFolder

WORLD_MAP_RESOLUTION = 256  # pixels of the world's light importance map
# ID collections that importers add to; what an import adds there is removed again after the object's render.
_ID_COLLECTIONS = (
    "objects", "meshes", "materials", "images", "textures", "node_groups", "collections", "cameras", "lights",
    "actions", "armatures", "curves", "lattices", "metaballs", "fonts", "grease_pencils", "hair_curves",
    "pointclouds", "volumes", "particles", "speakers", "sounds", "lightprobes", "cache_files", "worlds",
)


class ObjectRenderError(Exception):
    """One object cannot be rendered; the message is the human-readable reason recorded in the manifest."""


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


@dataclass
class LoadedObject:
    """Objects of one training object inside the render scene and every datablock to remove afterwards."""

    objects: list  # bpy.types.Object, all of them (meshes, empties, armatures...)
    owned_ids: list  # bpy.types.ID that this object brought in (removed by TrainingViewRenderer.discard)
    source: str
    # 3x3 matrix the importer applied, from the source's coordinates to Blender's (None: not known, FBX).
    import_axes: np.ndarray | None = None
    # 3x3 matrix from the source's coordinates to Z-up as the settings declare them (None: not known).
    declared_axes: np.ndarray | None = None
    extension: str = ""
    missing_textures: tuple[str, ...] = ()  # material libraries and images the file names but that are missing


class TrainingViewRenderer:
    """Configures ``scene`` once (render settings, camera, world) and renders objects into it one after another.

    ``scene`` must contain nothing but what this renderer and the loaded objects put there. ``owns_scene``:
    remove the scene itself on ``close()`` (the add-on renders in a temporary scene).
    """

    def __init__(self, settings: RenderSettings, scene, owns_scene: bool = False):
        self.settings = settings
        self.scene = scene
        self.owns_scene = owns_scene
        self.hdri_folder = shipped_hdri_folder()
        self.hdris = available_hdris(settings)
        self.gpu_backend = None
        self._own_ids = []
        self._configure_render()
        self._make_camera()
        self._make_world()

    # ----- scene set-up (once) -----
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

    # ----- loading objects -----
    def _snapshot_ids(self) -> dict:
        return {
            name: {id_.as_pointer() for id_ in getattr(bpy.data, name)}
            for name in _ID_COLLECTIONS
            if hasattr(bpy.data, name)
        }

    def _ids_added_since(self, snapshot: dict) -> list:
        added = []
        for name, before in snapshot.items():
            added += [id_ for id_ in getattr(bpy.data, name) if id_.as_pointer() not in before]
        return added

    def import_file(self, path: str) -> LoadedObject:
        """Imports a GLB/GLTF/OBJ/FBX/PLY/STL/.blend file into the render scene (the context scene).

        Raises ObjectRenderError when the file cannot be read; imported cameras and lights are dropped.
        """
        if bpy.context.scene != self.scene:
            raise RuntimeError("import_file needs the render scene to be the context scene")
        extension = os.path.splitext(path)[1].lower()
        if extension not in OBJECT_EXTENSIONS:
            raise ObjectRenderError(f"unsupported file type {extension or '(none)'}; use {', '.join(OBJECT_EXTENSIONS)}")
        if not os.path.isfile(path):
            raise ObjectRenderError(f"file not found: {path}")
        snapshot = self._snapshot_ids()
        try:
            self._run_importer(extension, path)
        except Exception as error:  # noqa: BLE001 - importers raise RuntimeError or their own errors
            self.discard(LoadedObject([], self._ids_added_since(snapshot), path))
            reason = " ".join(str(error).split()) or type(error).__name__
            raise ObjectRenderError(f"could not import {os.path.basename(path)}: {reason}") from None
        added = self._ids_added_since(snapshot)
        objects = [id_ for id_ in added if isinstance(id_, bpy.types.Object)]
        for obj in objects:
            if obj.name not in self.scene.collection.all_objects:  # e.g. objects appended from a .blend
                self.scene.collection.objects.link(obj)
        dropped = [obj for obj in objects if obj.type in {"CAMERA", "LIGHT", "LIGHT_PROBE", "SPEAKER"}]
        for obj in dropped:
            for collection in list(obj.users_collection):
                collection.objects.unlink(obj)
        kept = [obj for obj in objects if obj not in dropped]
        missing = _missing_material_libraries(path) if extension == ".obj" else []
        missing += _missing_images(added)
        return LoadedObject(
            kept, added, path,
            import_axes=file_axes_to_world(extension, "format"),
            declared_axes=file_axes_to_world(extension, self.settings.up_axis),
            extension=extension,
            missing_textures=tuple(missing),
        )

    def _run_importer(self, extension: str, path: str):
        if extension in (".glb", ".gltf"):
            result = bpy.ops.import_scene.gltf(filepath=path, merge_vertices=True)
        elif extension == ".obj":
            result = bpy.ops.wm.obj_import(filepath=path)
        elif extension == ".fbx":
            result = bpy.ops.import_scene.fbx(filepath=path)
        elif extension == ".ply":
            result = bpy.ops.wm.ply_import(filepath=path)
        elif extension == ".stl":
            result = bpy.ops.wm.stl_import(filepath=path)
        else:  # .blend: append every object of the file
            with bpy.data.libraries.load(path, link=False) as (data_from, data_to):
                data_to.objects = list(data_from.objects)
            result = {"FINISHED"}
        if "FINISHED" not in result:
            raise RuntimeError(f"the importer returned {', '.join(sorted(result))}")

    def copy_objects(self, objects: Sequence) -> LoadedObject:
        """Copies objects (with their mesh data, world transforms baked, parents dropped) into the render scene.

        The originals are never modified; the add-on renders the selected objects this way.
        """
        copies, owned = [], []
        for original in objects:
            duplicate = original.copy()
            if original.data is not None:
                duplicate.data = original.data.copy()
                owned.append(duplicate.data)
            duplicate.animation_data_clear()
            duplicate.parent = None
            duplicate.matrix_world = original.matrix_world.copy()
            self.scene.collection.objects.link(duplicate)
            copies.append(duplicate)
            owned.append(duplicate)
        identity = np.eye(3)  # the "source" frame of copies is the Blender world
        return LoadedObject(copies, owned, ", ".join(obj.name for obj in objects), identity, identity)

    def discard(self, loaded: LoadedObject):
        """Removes everything a loaded object brought into the file (objects, meshes, materials, images...)."""
        ids = [id_ for id_ in loaded.owned_ids if id_ not in self._own_ids]
        if ids:
            bpy.data.batch_remove(ids)

    # ----- rendering -----
    def _mesh_objects(self, loaded: LoadedObject) -> list:
        return [obj for obj in loaded.objects if obj.type == "MESH"]

    def _world_vertices(self, meshes: list) -> np.ndarray:
        depsgraph = bpy.context.evaluated_depsgraph_get() if bpy.context.scene == self.scene else None
        if depsgraph is None:
            depsgraph = self.scene.view_layers[0].depsgraph
        blocks = []
        for obj in meshes:
            evaluated = obj.evaluated_get(depsgraph)
            mesh = evaluated.data
            count = len(mesh.vertices)
            if count == 0:
                continue
            local = np.empty(count * 3, dtype=np.float64)
            mesh.vertices.foreach_get("co", local)
            matrix = np.array(evaluated.matrix_world, dtype=np.float64)
            blocks.append(local.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3])
        return np.concatenate(blocks) if blocks else np.zeros((0, 3))

    def _normalise(self, loaded: LoadedObject) -> tuple[dict, np.ndarray, np.ndarray | None]:
        """Turns the object to Z up as declared (``up_axis``) and scales and moves it so that its largest
        bounding-box side is 1 ("box") or its bounding sphere has radius 0.5 ("sphere"), centred at the origin.

        Returns the JSON's ``normalization`` (with ``file_to_world``), the normalised world vertices and the
        vertices in the source file's coordinates (None when the importer's axes are not known).
        """
        meshes = self._mesh_objects(loaded)
        if not meshes:
            raise ObjectRenderError("the file contains no mesh objects (empty scene)")
        triangles = sum(_triangle_count(obj.data) for obj in meshes)
        if triangles > self.settings.max_faces:
            raise ObjectRenderError(f"too large: {triangles} faces, more than the limit of {self.settings.max_faces}")
        self.scene.view_layers[0].update()
        vertices = self._world_vertices(meshes)
        if len(vertices) == 0 or triangles == 0:
            raise ObjectRenderError("the meshes have no faces (empty scene)")
        if not np.isfinite(vertices).all():
            raise ObjectRenderError("the mesh has non-finite vertex coordinates")
        # Blender holds import_axes @ p_file; the declared frame wants declared_axes @ p_file.
        if loaded.import_axes is not None and loaded.declared_axes is not None:
            turn = loaded.declared_axes @ np.linalg.inv(loaded.import_axes)
        else:
            turn = np.eye(3)
        vertices_z_up = vertices @ turn.T
        low, high = vertices_z_up.min(axis=0), vertices_z_up.max(axis=0)
        extent = float((high - low).max())
        if extent <= 1e-9 * max(1.0, float(np.abs(vertices).max())):
            raise ObjectRenderError("the object has zero size (all vertices at one point)")
        scale, offset = normalization_transform(vertices_z_up, self.settings.normalize)
        placement = np.eye(4)
        placement[:3, :3], placement[:3, 3] = scale * turn, offset
        normaliser = bpy.data.objects.new("iso3d_normaliser", None)
        self.scene.collection.objects.link(normaliser)
        loaded.objects.append(normaliser)
        loaded.owned_ids.append(normaliser)
        for obj in loaded.objects:
            if obj is not normaliser and (obj.parent is None or obj.parent not in loaded.objects):
                world = obj.matrix_world.copy()
                obj.parent = normaliser
                obj.matrix_parent_inverse = mathutils.Matrix.Identity(4)
                obj.matrix_world = world
        normaliser.matrix_world = mathutils.Matrix(placement.tolist())
        self.scene.view_layers[0].update()
        file_to_world = None
        if loaded.import_axes is not None and loaded.declared_axes is not None:
            file_to_world = np.eye(4)
            file_to_world[:3, :3], file_to_world[:3, 3] = scale * loaded.declared_axes, offset
        normalization = {
            "mode": self.settings.normalize,
            "scale": scale,
            "offset": offset.tolist(),
            "file_to_world": None if file_to_world is None else file_to_world.tolist(),
            "bbox_min_z_up": low.tolist(),
            "bbox_max_z_up": high.tolist(),
            "faces": triangles,
        }
        file_vertices = None if loaded.import_axes is None else vertices @ np.linalg.inv(loaded.import_axes).T
        return normalization, vertices_z_up * scale + offset, file_vertices

    def _quality(self, loaded: LoadedObject, world_vertices: np.ndarray, file_vertices: np.ndarray | None,
                 plan: ObjectPlan) -> dict:
        """Flags for a person to look at: missing textures, a likely Z-up file read as Y-up, cropped views."""
        return {
            "missing_textures": list(loaded.missing_textures),
            "likely_z_up": (
                file_vertices is not None and likely_z_up(file_vertices, loaded.extension, self.settings.up_axis)
            ),
            "outside_frame_fraction": round(outside_frame_fraction(world_vertices, self.settings, plan), 6),
        }

    def _composite_over_background(self, path: str):
        """Rewrites a rendered straight-alpha RGBA PNG over the white background as an RGB PNG: the pixels
        blend in linear light, and where alpha is 0 the result is exactly 255."""
        rendered = bpy.data.images.load(path, check_existing=False)
        try:
            width, height = rendered.size
            pixels = np.empty(width * height * 4, dtype=np.float32)
            rendered.pixels.foreach_get(pixels)  # the stored (sRGB-encoded) values of an 8-bit PNG, 0..1
        finally:
            bpy.data.images.remove(rendered)
        pixels = pixels.reshape(-1, 4)
        alpha = pixels[:, 3:4]
        linear = _srgb_to_linear(pixels[:, :3])
        composited = _linear_to_srgb(linear * alpha + (1.0 - alpha))
        composited[alpha[:, 0] <= 0.0] = 1.0
        out = bpy.data.images.new("iso3d_composite", width, height, alpha=False)
        try:
            rgba = np.concatenate([composited, np.ones_like(alpha)], axis=1)
            out.pixels.foreach_set(rgba.ravel())
            out.filepath_raw = path
            out.file_format = "PNG"
            out.save()
        finally:
            bpy.data.images.remove(out)

    def render(self, loaded: LoadedObject, object_id: str, out_root: str, staging_root: str | None = None,
               overwrite: bool = False) -> Iterator[tuple[int, int]]:
        """Renders one loaded object's views into ``out_root/object_id`` and yields (views done, views total).

        Images and the JSON go to a staging folder under ``staging_root`` (default ``out_root/.partial``),
        owned by this process (``render_staging``), checked whole and renamed to ``out_root/object_id`` only
        when complete. ``overwrite``: replace an existing folder. Raises ObjectRenderError with the reason when
        the object cannot be rendered.
        """
        started = time.perf_counter()
        plan = plan_object(self.settings, object_id, self.hdris)
        normalization, world_vertices, file_vertices = self._normalise(loaded)
        quality = self._quality(loaded, world_vertices, file_vertices, plan)
        self._set_lighting(plan)
        self.scene.cycles.seed = plan.seed
        staging_root = staging_root or os.path.join(out_root, ".partial")
        with StagingFolder(staging_root, object_id) as staging:
            total = len(plan.views)
            for done, view in enumerate(plan.views):
                self.camera.matrix_world = mathutils.Matrix(
                    camera_to_world(view.elevation_deg, view.azimuth_deg, view.distance).tolist()
                )
                self.scene.render.filepath = os.path.join(staging.path, view.file_name)
                bpy.ops.render.render(write_still=True, scene=self.scene.name)
                if not os.path.isfile(self.scene.render.filepath):
                    raise ObjectRenderError(f"Blender wrote no image for view {view.file_name}")
                if self.settings.background == "white":
                    self._composite_over_background(self.scene.render.filepath)
                yield done + 1, total
            render_info = {
                "engine": self.scene.render.engine,
                "device": self.settings.device,
                "gpu_backend": self.gpu_backend,
                "blender_version": bpy.app.version_string,
                "seconds": time.perf_counter() - started,
            }
            record = object_record(self.settings, plan, loaded.source, normalization, render_info, quality)
            write_json_atomically(os.path.join(staging.path, RECORD_FILE), record)
            try:
                staging.publish(
                    os.path.join(out_root, object_id),
                    lambda path: verify_object_folder(path, self.settings, object_id),
                    overwrite,
                )
            except PublishError as error:
                raise ObjectRenderError(str(error)) from None

    def render_file(self, path: str, object_id: str, out_root: str, staging_root: str | None = None,
                    overwrite: bool = False):
        """Imports, renders and discards one file (the headless path); raises ObjectRenderError on failure."""
        loaded = self.import_file(path)
        try:
            for _ in self.render(loaded, object_id, out_root, staging_root, overwrite):
                pass
        finally:
            self.discard(loaded)

    def close(self):
        """Removes the camera, world and HDRI images (and the scene when owned)."""
        ids = [id_ for id_ in self._own_ids if id_ is not None]
        self._own_ids = []
        if self.owns_scene:
            ids.append(self.scene)
        bpy.data.batch_remove(ids)


def _triangle_count(mesh) -> int:
    """Triangles of a mesh's faces (an n-gon counts n - 2)."""
    corners = np.empty(len(mesh.polygons), dtype=np.int64)
    mesh.polygons.foreach_get("loop_total", corners)
    return int(np.maximum(corners - 2, 0).sum())


_MTLLIB = re.compile(rb"^\s*mtllib\s+(.+?)\s*$", re.MULTILINE)


def _missing_material_libraries(obj_path: str) -> list[str]:
    """The ``mtllib`` files an OBJ names that are not beside it (its materials and textures are then lost)."""
    with open(obj_path, "rb") as handle:
        text = handle.read()
    folder = os.path.dirname(obj_path)
    missing = []
    for match in _MTLLIB.finditer(text):
        name = match.group(1).decode("utf-8", "replace")
        if not os.path.isfile(os.path.join(folder, name)):
            missing.append(name)
    return missing


def _missing_images(ids: list) -> list[str]:
    """Image files that imported materials use but that are neither packed nor on disk."""
    missing = []
    for id_ in ids:
        if isinstance(id_, bpy.types.Image) and id_.source in {"FILE", "SEQUENCE", "TILED"} and not id_.packed_file:
            if not os.path.isfile(bpy.path.abspath(id_.filepath)):
                missing.append(os.path.basename(id_.filepath) or id_.name)
    return missing


def _srgb_to_linear(values: np.ndarray) -> np.ndarray:
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(values: np.ndarray) -> np.ndarray:
    values = np.clip(values, 0.0, 1.0)
    return np.where(values <= 0.0031308, values * 12.92, 1.055 * values ** (1.0 / 2.4) - 0.055)
