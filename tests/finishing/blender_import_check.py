"""Run by bpy in a subprocess: import a GLB as Blender's importer does and print what the artist would get (JSON).

python blender_import_check.py FILE.glb -> {"bbox_min", "bbox_max", "centroid", "images", "base_color_textured",
"red_side_x"} in Blender's world (Z-up, metres).
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
print(json.dumps({
    "objects": len(objects),
    "bbox_min": points.min(0).tolist(), "bbox_max": points.max(0).tolist(), "centroid": points.mean(0).tolist(),
    "images": [list(image.size) for image in bpy.data.images],
    "base_color_textured": textured,
}))
