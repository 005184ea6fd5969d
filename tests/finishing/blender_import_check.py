"""Run by bpy in a subprocess: import a GLB as Blender's importer does and print what the artist would get (JSON).

python blender_import_check.py FILE.glb -> {"objects", "bbox_min", "bbox_max", "centroid", "images",
"base_color_textured", "plus_x_colour"} in Blender's world (Z-up, metres); plus_x_colour is the mean texture colour
(0..1, as stored) at the UVs of the loops whose vertex has x > 0.1 (Blender: uv (0, 0) is the image's bottom-left).
"""

import json
import sys

import bpy
import numpy as np

bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.gltf(filepath=sys.argv[1])
objects = [o for o in bpy.context.scene.objects if o.type == "MESH"]
points, textured = [], []
for obj in objects:
    mesh = obj.data
    coords = np.zeros(len(mesh.vertices) * 3)
    mesh.vertices.foreach_get("co", coords)
    matrix = np.array(obj.matrix_world)
    coords = coords.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
    points.append(coords)
    for material in mesh.materials:
        bsdf = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
        links = bsdf.inputs["Base Color"].links
        textured.append(bool(links) and links[0].from_node.type == "TEX_IMAGE")
points = np.concatenate(points)
mesh = objects[0].data
image = next(n for n in mesh.materials[0].node_tree.nodes if n.type == "TEX_IMAGE").image
width, height = image.size
pixels = np.array(image.pixels[:]).reshape(height, width, -1)
uvs = np.zeros(len(mesh.loops) * 2)
mesh.uv_layers.active.data.foreach_get("uv", uvs)
uvs = uvs.reshape(-1, 2)
loop_vertices = np.zeros(len(mesh.loops), dtype=np.int64)
mesh.loops.foreach_get("vertex_index", loop_vertices)
plus_x = points[loop_vertices, 0] > 0.1
rows = np.clip((uvs[plus_x, 1] * height).astype(int), 0, height - 1)
cols = np.clip((uvs[plus_x, 0] * width).astype(int), 0, width - 1)
plus_x_colour = pixels[rows, cols, :3].mean(axis=0).tolist()
print(json.dumps({
    "objects": len(objects),
    "bbox_min": points.min(0).tolist(), "bbox_max": points.max(0).tolist(), "centroid": points.mean(0).tolist(),
    "images": [list(image.size) for image in bpy.data.images],
    "base_color_textured": textured,
    "plus_x_colour": plus_x_colour,
}))
