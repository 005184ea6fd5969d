"""Bringing training objects into the render scene and out again (bpy only), a mixin of
``dataset_render.TrainingViewRenderer``: import a GLB/GLTF/OBJ/FBX/PLY/STL/.blend file (the importer's axis
conversion recorded, cameras and lights dropped, missing textures noted) or copy the add-on's selected objects, and
remove every datablock an object brought in once it is rendered.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import bpy
import numpy as np

from .core.render_plan import OBJECT_EXTENSIONS, file_axes_to_world


# ID collections that importers add to; what an import adds there is removed again after the object's render.
_ID_COLLECTIONS = (
    "objects", "meshes", "materials", "images", "textures", "node_groups", "collections", "cameras", "lights",
    "actions", "armatures", "curves", "lattices", "metaballs", "fonts", "grease_pencils", "hair_curves",
    "pointclouds", "volumes", "particles", "speakers", "sounds", "lightprobes", "cache_files", "worlds",
)


class ObjectRenderError(Exception):
    """One object cannot be rendered; the message is the human-readable reason recorded in the manifest."""


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


class ObjectLoading:
    """Loading and discarding objects in ``self.scene`` (the renderer's; ``self._own_ids`` are never discarded)."""

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
