"""Multi-view training-data renderer (bpy only): one render scene reused for many objects.

Used by the add-on's "Render training views" operator (on copies of the selected objects) and, headless, by
``training/render_cli.py`` worker processes (on imported files). Per object: import or copy into the render
scene, turn it to Z up (the importer's axis conversion or ``up_axis``) and normalise it (unit box or sphere) at
the origin, light with a randomly rotated and scaled HDRI from the ones Blender ships, render the fixed and
random view sets on a transparent film and composite them over the exact background after denoising, write
``cameras.json`` (conventions and the source file's ``file_to_world`` in ``render_plan``, quality flags), then
check the whole folder and publish it with one atomic rename (``render_staging``) so that no half-written object
ever looks finished. Units: Blender units, angles in degrees unless named ``*_rad``; world Z up.

The scene set-up and lighting are ``render_scene_setup``'s, importing and discarding objects
``render_object_loading``'s (mixins of ``TrainingViewRenderer``); this module normalises, renders and writes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import bpy
import mathutils
import numpy as np

from .core.atomic_files import write_json_atomically
from .core.render_plan import (
    RECORD_FILE,
    ObjectPlan,
    RenderSettings,
    camera_to_world,
    likely_z_up,
    normalization_transform,
    object_record,
    outside_frame_fraction,
    plan_object,
    verify_object_folder,
)
from .core.render_staging import PublishError, StagingFolder
from .render_object_loading import LoadedObject, ObjectLoading, ObjectRenderError
from .render_scene_setup import RenderSceneSetup, available_hdris, shipped_hdri_folder


class TrainingViewRenderer(RenderSceneSetup, ObjectLoading):
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


def _srgb_to_linear(values: np.ndarray) -> np.ndarray:
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(values: np.ndarray) -> np.ndarray:
    values = np.clip(values, 0.0, 1.0)
    return np.where(values <= 0.0031308, values * 12.92, 1.055 * values ** (1.0 / 2.4) - 0.055)
