"""Renders a known object with bpy (run in its own process: ``python render_known_object.py OUT_DIR``).

The object: a red box (0.5 x 0.7 x 0.4) at the origin and a blue ball (radius 0.22) at (+0.35, -0.3, 0.2), both
with flat emission shaders, on a transparent background. Cameras come from the project's camera code
(backend.diffusion.cameras.camera_to_world) and are assigned to Blender's camera as they are. Writes view_XX.png
(RGBA), cameras.json (elevation, azimuth, distance, fovy, c2w per view) and ground_truth.npz (world vertices, faces).
"""

import json
import math
import sys
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from backend.diffusion.cameras import camera_to_world  # the project is installed (scripts/install.sh)

RESOLUTION = 40
FOVY = 40.0
DISTANCE = 2.6
ELEVATIONS = (-25.0, 10.0, 45.0)
AZIMUTHS = (0.0, 60.0, 120.0, 180.0, 240.0, 300.0)


def emission_material(name, rgb):
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    nodes = material.node_tree.nodes
    nodes.clear()
    emission = nodes.new("ShaderNodeEmission")
    emission.inputs["Color"].default_value = (*rgb, 1.0)
    output = nodes.new("ShaderNodeOutputMaterial")
    material.node_tree.links.new(emission.outputs["Emission"], output.inputs["Surface"])
    return material


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0, 0, 0))
    box = bpy.context.object
    box.scale = (0.5, 0.7, 0.4)
    box.data.materials.append(emission_material("red", (0.8, 0.1, 0.1)))
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.22, location=(0.35, -0.3, 0.2), segments=32, ring_count=16)
    ball = bpy.context.object
    ball.data.materials.append(emission_material("blue", (0.1, 0.2, 0.9)))

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 8
    scene.render.resolution_x = scene.render.resolution_y = RESOLUTION
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.view_settings.view_transform = "Standard"
    camera_data = bpy.data.cameras.new("camera")
    camera_data.sensor_fit = "VERTICAL"
    camera_data.angle_y = math.radians(FOVY)
    camera = bpy.data.objects.new("camera", camera_data)
    scene.collection.objects.link(camera)
    scene.camera = camera

    views = []
    for elevation in ELEVATIONS:
        for azimuth in AZIMUTHS:
            c2w = camera_to_world(elevation, azimuth, DISTANCE)[0].numpy()
            camera.matrix_world = Matrix(c2w.tolist())
            index = len(views)
            scene.render.filepath = str(out_dir / f"view_{index:02d}.png")
            bpy.ops.render.render(write_still=True)
            views.append({"elevation": elevation, "azimuth": azimuth, "distance": DISTANCE, "fovy": FOVY,
                          "c2w": c2w.tolist(), "image": f"view_{index:02d}.png"})
    (out_dir / "cameras.json").write_text(json.dumps(views, indent=1))

    vertices, faces = [], []
    depsgraph = bpy.context.evaluated_depsgraph_get()
    for obj in (box, ball):
        mesh = obj.evaluated_get(depsgraph).to_mesh()
        mesh.calc_loop_triangles()
        base = sum(len(v) for v in vertices)
        vertices.append(np.array([obj.matrix_world @ v.co for v in mesh.vertices], dtype=np.float64))
        faces.append(np.array([t.vertices[:] for t in mesh.loop_triangles], dtype=np.int64) + base)
    np.savez(out_dir / "ground_truth.npz", vertices=np.concatenate(vertices), faces=np.concatenate(faces))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
