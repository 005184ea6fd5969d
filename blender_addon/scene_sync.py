"""Applies backend messages to Blender data: meshes replaced in place, preview images and image empties.

All array work goes through ``foreach_set`` with numpy buffers (no per-vertex Python loops), so a 200k-face mesh
applies in tens of milliseconds. Coordinates arrive in Blender's Z-up world; camera matrices are camera-to-world.
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy
import numpy as np

COLOR_ATTRIBUTE = "iso3d_color"
MATERIAL_NAME = "Isotropic3D vertex colour"
JOB_PROPERTY = "iso3d_job"


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


def set_mesh_data(mesh: bpy.types.Mesh, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray) -> None:
    """Replace the geometry of ``mesh``: vertices float32 [V, 3], triangles int32 [F, 3], colours uint8 [V, 3]."""
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


def apply_mesh(
    name: str, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, job: str = "", collection=None
) -> bpy.types.Object:
    """Create the object ``name`` or replace its mesh in place (keeping its transform, modifiers and material)."""
    obj = bpy.data.objects.get(name)
    if obj is None or obj.type != "MESH":
        mesh = bpy.data.meshes.new(name)
        obj = bpy.data.objects.new(name, mesh)
        (collection or bpy.context.scene.collection).objects.link(obj)
    set_mesh_data(obj.data, vertices, faces, colors)
    if not obj.data.materials:
        obj.data.materials.append(vertex_color_material())
    if job:
        obj[JOB_PROPERTY] = job
    return obj


def load_png_image(name: str, png: bytes, folder: str | os.PathLike) -> bpy.types.Image:
    """Save ``png`` as ``folder/name.png`` and load it as an Image datablock (reloaded if it exists)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    temporary = path.with_name(path.name + ".partial")
    temporary.write_bytes(png)
    temporary.replace(path)
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
