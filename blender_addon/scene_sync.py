"""Applies backend messages to Blender data: meshes replaced in place, finished (UV-mapped, baked-texture) meshes
and their LODs, preview images and image empties.

All array work goes through ``foreach_set`` with numpy buffers (no per-vertex Python loops), so a 200k-face mesh
applies in tens of milliseconds. Coordinates arrive in Blender's Z-up world; camera matrices are camera-to-world.
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy
import numpy as np

from .core.atomic_files import write_bytes_atomically
COLOR_ATTRIBUTE = "iso3d_color"
UV_MAP = "UVMap"
MATERIAL_NAME = "Isotropic3D vertex colour"
BAKED_MATERIAL_PREFIX = "Isotropic3D baked"
JOB_PROPERTY = "iso3d_job"  # the generate job whose field made the object (what Finish works on)
FINISH_JOB_PROPERTY = "iso3d_finish_job"
LOD_OF_PROPERTY, LOD_LEVEL_PROPERTY = "iso3d_lod_of", "iso3d_lod_level"
LOD_LAYOUTS = ("CHILDREN", "COLLECTION")


def vertex_color_material() -> bpy.types.Material:
    """A material showing the ``iso3d_color`` attribute as base colour (shared by all generated objects)."""
    material = bpy.data.materials.get(MATERIAL_NAME)
    if material is not None:
        return material
    material = bpy.data.materials.new(MATERIAL_NAME)
    if bpy.app.version < (5, 0, 0):  # always on (and deprecated) from 5.0
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    shader = next((n for n in nodes if n.type == "BSDF_PRINCIPLED"), None) or nodes.new("ShaderNodeBsdfPrincipled")
    attribute = nodes.new("ShaderNodeVertexColor")
    attribute.layer_name = COLOR_ATTRIBUTE
    attribute.location = (shader.location[0] - 300, shader.location[1])
    links.new(attribute.outputs["Color"], shader.inputs["Base Color"])
    return material


def baked_material(name: str, image: bpy.types.Image) -> bpy.types.Material:
    """The material ``name``: Principled BSDF (metallic 0, roughness 1, as the exported GLB) with ``image`` as its
    base colour through the UV map (created, or its image swapped when it exists)."""
    material = bpy.data.materials.get(name) or bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    shader = next((n for n in nodes if n.type == "BSDF_PRINCIPLED"), None) or nodes.new("ShaderNodeBsdfPrincipled")
    shader.inputs["Metallic"].default_value = 0.0
    shader.inputs["Roughness"].default_value = 1.0
    texture = next((n for n in nodes if n.type == "TEX_IMAGE"), None)
    if texture is None:
        texture = nodes.new("ShaderNodeTexImage")
        texture.location = (shader.location[0] - 350, shader.location[1])
        links.new(texture.outputs["Color"], shader.inputs["Base Color"])
    texture.image = image
    texture.interpolation = "Linear"
    return material


def _write_png(folder: str | os.PathLike, stem: str, png: bytes) -> Path:
    """``folder/stem.png`` written whole (a partial file, then one rename)."""
    return write_bytes_atomically(Path(folder) / f"{stem}.png", png)


def load_texture_image(name: str, png: bytes, folder: str | os.PathLike) -> bpy.types.Image:
    """``png`` saved as ``folder/name.png`` and loaded as the Image ``name``, packed into the .blend file so the
    asset travels with it. An older image of that name is replaced (materials using it are pointed at the new
    one by the caller)."""
    path = _write_png(folder, bpy.path.clean_name(name), png)
    old = bpy.data.images.get(name)
    if old is not None:
        old.name = f"{name} (old)"
    image = bpy.data.images.load(str(path))
    image.name = name
    image.pack()
    if old is not None:
        bpy.data.images.remove(old)
    return image


def set_mesh_data(mesh: bpy.types.Mesh, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray,
                  corner_uvs: np.ndarray | None = None) -> None:
    """Replace the geometry of ``mesh``: vertices float32 [V, 3], triangles int32 [F, 3], colours uint8 [V, 3],
    optionally a UV map from ``corner_uvs`` float32 [F, 3, 2] (one uv per face corner, v up as in Blender)."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1, 3)
    faces = np.ascontiguousarray(faces, dtype=np.int32).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError("a face refers to a vertex that does not exist")
    mesh.clear_geometry()
    mesh.vertices.add(len(vertices))
    mesh.loops.add(faces.size)
    mesh.polygons.add(len(faces))
    # The generic attributes take the buffers as one copy (Blender 4.0+); MeshVertex.co / MeshLoop.vertex_index
    # go element by element and are ~100x slower.
    if "position" in mesh.attributes and ".corner_vert" in mesh.attributes:
        mesh.attributes["position"].data.foreach_set("vector", vertices.ravel())
        mesh.attributes[".corner_vert"].data.foreach_set("value", faces.ravel())
    else:  # Blender before 4.0: polygon sizes are stored too
        mesh.vertices.foreach_set("co", vertices.ravel())
        mesh.loops.foreach_set("vertex_index", faces.ravel())
        mesh.polygons.foreach_set("loop_total", np.full(len(faces), 3, dtype=np.int32))
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    attribute = mesh.color_attributes.get(COLOR_ATTRIBUTE) or mesh.color_attributes.new(
        COLOR_ATTRIBUTE, "BYTE_COLOR", "POINT"
    )
    rgba = np.empty((len(vertices), 4), np.float32)
    rgba[:, :3] = np.asarray(colors, dtype=np.float32).reshape(-1, 3) / 255.0
    rgba[:, 3] = 1.0
    attribute.data.foreach_set("color_srgb", rgba.ravel())
    mesh.color_attributes.active_color = attribute
    if corner_uvs is not None:
        corner_uvs = np.ascontiguousarray(corner_uvs, dtype=np.float32).reshape(-1, 2)
        if len(corner_uvs) != faces.size:
            raise ValueError(f"{len(corner_uvs)} corner UVs for {faces.size} face corners")
        layer = mesh.uv_layers.get(UV_MAP) or mesh.uv_layers.new(name=UV_MAP)
        layer.data.foreach_set("uv", corner_uvs.ravel())
        mesh.uv_layers.active = layer


def apply_mesh(
    name: str, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, job: str = "", collection=None
) -> bpy.types.Object:
    """Create the object ``name`` or replace its mesh in place (keeping its transform, modifiers and material).

    A new generation (another ``job``) into a finished object makes it unfinished again: its baked material (which
    needs the finished UVs) goes back to the vertex-colour one."""
    obj = bpy.data.objects.get(name)
    if obj is None or obj.type != "MESH":
        mesh = bpy.data.meshes.new(name)
        obj = bpy.data.objects.new(name, mesh)
        (collection or bpy.context.scene.collection).objects.link(obj)
    set_mesh_data(obj.data, vertices, faces, colors)
    if job and obj.get(JOB_PROPERTY) != job and FINISH_JOB_PROPERTY in obj:
        del obj[FINISH_JOB_PROPERTY]
        obj.data.materials.clear()
    if not obj.data.materials:
        obj.data.materials.append(vertex_color_material())
    if job:
        obj[JOB_PROPERTY] = job
    return obj


def finished_from(obj: bpy.types.Object, job: str) -> bool:
    """Whether ``obj`` holds a finished asset made from the generate ``job`` (its stream is then superseded)."""
    return obj.get(JOB_PROPERTY) == job and FINISH_JOB_PROPERTY in obj


def apply_finished_mesh(obj: bpy.types.Object, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray,
                        corner_uvs: np.ndarray, texture: bpy.types.Image, finish_job: str = "") -> bpy.types.Object:
    """Replace ``obj``'s mesh in place with a finished one (UV map, vertex colours kept as an attribute) and its
    materials with one baked-texture material. Transform, modifiers and the generate job id stay."""
    set_mesh_data(obj.data, vertices, faces, colors, corner_uvs)
    material = baked_material(f"{BAKED_MATERIAL_PREFIX} {obj.name}", texture)
    obj.data.materials.clear()
    obj.data.materials.append(material)
    if finish_job:
        obj[FINISH_JOB_PROPERTY] = finish_job
    return obj


def lod_objects(main: bpy.types.Object) -> dict[int, bpy.types.Object]:
    """level -> the LOD objects made for ``main`` (found by their custom properties, wherever they are)."""
    return {int(obj[LOD_LEVEL_PROPERTY]): obj for obj in bpy.data.objects
            if obj.get(LOD_OF_PROPERTY) == main.name and LOD_LEVEL_PROPERTY in obj}


def apply_lod(main: bpy.types.Object, level: int, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray,
              corner_uvs: np.ndarray, texture: bpy.types.Image, layout: str = "CHILDREN") -> bpy.types.Object:
    """The LOD ``level`` (1, 2, ...) of ``main`` as ``"<main> LOD<level>"``, replaced in place when it exists.

    layout CHILDREN: a child of ``main`` exactly on it, hidden (eye toggle) and not rendered (the main object is
    what shows; the LODs travel with it; Alt+H shows them). COLLECTION: in the collection ``"<main> LODs"``,
    visible, side by side along +X from ``main`` (one object width apart), for comparing them."""
    if layout not in LOD_LAYOUTS:
        raise ValueError(f"LOD layout {layout!r}: one of {', '.join(LOD_LAYOUTS)}")
    obj = lod_objects(main).get(level)
    if obj is None:
        name = f"{main.name} LOD{level}"
        obj = bpy.data.objects.new(name, bpy.data.meshes.new(name))
        obj[LOD_OF_PROPERTY], obj[LOD_LEVEL_PROPERTY] = main.name, level
    apply_finished_mesh(obj, vertices, faces, colors, corner_uvs, texture)
    for collection in list(obj.users_collection):
        collection.objects.unlink(obj)
    if layout == "CHILDREN":
        for collection in main.users_collection or [bpy.context.scene.collection]:
            collection.objects.link(obj)
        obj.parent = main
        obj.matrix_parent_inverse.identity()
        obj.matrix_basis.identity()
        obj.hide_viewport = False  # evaluated (its world matrix follows the parent), only not shown:
        obj.hide_render = True
        _hide_in_view_layers(obj, True)
    else:
        from mathutils import Matrix

        name = f"{main.name} LODs"
        collection = bpy.data.collections.get(name) or bpy.data.collections.new(name)
        parent = (main.users_collection or [bpy.context.scene.collection])[0]
        if collection.name not in parent.children:
            parent.children.link(collection)
        collection.objects.link(obj)
        obj.parent = None
        width = max(float(np.ptp(np.asarray(vertices, np.float64)[:, 0])) if len(vertices) else 0.0, 1e-3)
        obj.matrix_world = main.matrix_world @ Matrix.Translation((1.25 * width * level, 0.0, 0.0))
        obj.hide_viewport = obj.hide_render = False
        _hide_in_view_layers(obj, False)
    return obj


def _hide_in_view_layers(obj: bpy.types.Object, hidden: bool) -> None:
    """The eye toggle (H / Alt+H) in every view layer that shows ``obj``."""
    for scene in bpy.data.scenes:
        if obj.name not in scene.collection.all_objects:
            continue
        for view_layer in scene.view_layers:
            try:
                obj.hide_set(hidden, view_layer=view_layer)
            except RuntimeError:  # excluded from this view layer
                pass


def remove_lods(main: bpy.types.Object, keep_levels: int) -> None:
    """Delete ``main``'s LOD objects above ``keep_levels`` (a re-run with fewer LODs), with their meshes and
    materials, and the LOD collection when it is left empty."""
    for level, obj in lod_objects(main).items():
        if level > keep_levels:
            mesh, materials = obj.data, [m for m in obj.data.materials if m is not None]
            bpy.data.objects.remove(obj)
            if mesh.users == 0:
                bpy.data.meshes.remove(mesh)
            for material in materials:
                if material.users == 0 and material.name.startswith(BAKED_MATERIAL_PREFIX):
                    bpy.data.materials.remove(material)
    collection = bpy.data.collections.get(f"{main.name} LODs")
    if collection is not None and not collection.all_objects:
        bpy.data.collections.remove(collection)


def load_png_image(name: str, png: bytes, folder: str | os.PathLike) -> bpy.types.Image:
    """Save ``png`` as ``folder/name.png`` and load it as an Image datablock (reloaded if it exists)."""
    path = _write_png(folder, name, png)
    image = bpy.data.images.get(name)
    if image is not None and Path(bpy.path.abspath(image.filepath)) == path:
        image.reload()
        return image
    if image is not None:
        bpy.data.images.remove(image)
    image = bpy.data.images.load(str(path))
    image.name = name
    return image


def place_view_empties(
    name: str, images: list, c2w: list, target=(0.0, 0.0, 0.0), distance: float = 2.5, size: float = 1.0, collection=None
) -> list:
    """Image empties showing each view at its camera around ``target``, facing it (the image plane is the
    camera's XY plane; its +Z, the camera's back, points away from the target)."""
    from mathutils import Matrix

    empties = []
    target = np.asarray(target, dtype=np.float64)
    for index, (image, matrix) in enumerate(zip(images, c2w)):
        matrix = np.asarray(matrix, dtype=np.float64).reshape(4, 4).copy()
        direction = matrix[:3, 3] / (np.linalg.norm(matrix[:3, 3]) or 1.0)
        matrix[:3, 3] = target + direction * distance
        empty_name = f"{name} view {index}"
        empty = bpy.data.objects.get(empty_name)
        if empty is None:
            empty = bpy.data.objects.new(empty_name, None)
            (collection or bpy.context.scene.collection).objects.link(empty)
        empty.empty_display_type = "IMAGE"
        empty.data = image
        empty.empty_display_size = size
        empty.use_empty_image_alpha = False
        empty.matrix_world = Matrix(matrix.tolist())  # Matrix() takes rows (a plain nested list would be columns)
        empties.append(empty)
    return empties


def _world_box(obj) -> tuple[np.ndarray, np.ndarray]:
    """(lowest, highest) corner of ``obj``'s bounding box in world space (its evaluated box)."""
    corners = np.c_[np.array(obj.bound_box, dtype=np.float64), np.ones(8)] @ np.array(obj.matrix_world).T
    return corners[:, :3].min(axis=0), corners[:, :3].max(axis=0)


def place_new_object(obj: bpy.types.Object, target, view_layer=None, gap: float = 0.1) -> None:
    """A new result where the artist looks: at ``target`` (the 3D cursor when the job was sent), moved along +X
    past any other generated object it would overlap (boxes in world units, ``gap`` between them), then the only
    selected object and the active one in ``view_layer``."""
    from mathutils import Vector

    obj.location = Vector(target)
    if view_layer is not None:
        view_layer.update()
    others = [other for other in bpy.data.objects
              if other is not obj and other.type == "MESH" and other.get(JOB_PROPERTY) and LOD_OF_PROPERTY not in other]
    boxes = [_world_box(other) for other in others]
    for _ in range(len(boxes) + 1):
        low, high = _world_box(obj)
        blocking = [box for box in boxes if np.all(low < box[1] + gap) and np.all(high > box[0] - gap)]
        if not blocking:
            break
        shift = max(box[1][0] for box in blocking) + gap - low[0]
        obj.location.x += float(shift)
        if view_layer is not None:
            view_layer.update()
    if view_layer is not None and obj.name in view_layer.objects:
        for selected in list(view_layer.objects):
            if selected.select_get(view_layer=view_layer):
                selected.select_set(False, view_layer=view_layer)
        obj.select_set(True, view_layer=view_layer)
        view_layer.objects.active = obj


def preview_sheet(name: str, images: list) -> bpy.types.Image:
    """One Image ``name`` with the views in a 2x2 grid (view 0 top left, 1 top right, 2 bottom left, 3 bottom
    right), replaced in place when it exists; generated in memory (packed with the file when saved)."""
    width, height = max(image.size[0] for image in images), max(image.size[1] for image in images)
    columns = 2
    rows = (len(images) + columns - 1) // columns
    sheet = np.ones((rows * height, columns * width, 4), np.float32)
    for index, image in enumerate(images):
        pixels = np.empty(image.size[0] * image.size[1] * image.channels, np.float32)
        image.pixels.foreach_get(pixels)
        pixels = pixels.reshape(image.size[1], image.size[0], image.channels)
        row, column = divmod(index, columns)
        top = (rows - 1 - row) * height  # Blender's pixel rows start at the bottom
        block = sheet[top:top + image.size[1], column * width:column * width + image.size[0]]
        block[..., : min(image.channels, 4)] = pixels[..., :4]
    result = bpy.data.images.get(name)
    if result is not None and tuple(result.size) != (columns * width, rows * height):
        bpy.data.images.remove(result)
        result = None
    if result is None:
        result = bpy.data.images.new(name, columns * width, rows * height, alpha=True)
    result.pixels.foreach_set(sheet.ravel())
    result.update()
    return result


def show_in_image_editor(image: bpy.types.Image) -> bool:
    """Show ``image`` in the open Image Editors (the first one when several); False when none is open (the
    artist's layout is never changed)."""
    shown = False
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.spaces.active.image = image
                area.tag_redraw()
                shown = True
                break
    return shown
