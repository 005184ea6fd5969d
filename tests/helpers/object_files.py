"""Object files for renderer tests, written by the test itself: OBJ and PLY as text, a textured GLB via bpy.

Geometry is asymmetric on purpose so that a wrong camera convention (mirror, azimuth direction, up axis)
changes the silhouettes. Coordinates are Blender world coordinates (Z up).
"""

from __future__ import annotations

import os

import numpy as np

# An irregular tetrahedron, off the origin (the renderer must normalise it).
TETRA_VERTICES = np.array([[0.3, -0.2, 0.1], [1.3, -0.1, 0.0], [0.5, 0.5, 0.2], [0.6, 0.0, 1.0]])
TETRA_FACES = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [2, 0, 3]])
# A box with three different side lengths, off the origin.
BOX_MIN, BOX_MAX = np.array([-2.0, 1.0, 0.5]), np.array([0.0, 2.0, 1.0])


def box_mesh(low=BOX_MIN, high=BOX_MAX):
    corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
    quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    triangles = [[q[0], q[1], q[2]] for q in quads] + [[q[0], q[2], q[3]] for q in quads]
    return corners, np.array(triangles)


def write_obj(path, vertices, faces, header=""):
    """OBJ text; the OBJ importer's default axes (forward -Z, up Y) map file (x, y, z) to Blender (x, -z, y),
    so Blender coordinates are written as (x, z, -y). ``header``: lines written first (e.g. an ``mtllib``)."""
    with open(path, "w") as handle:
        handle.write(header)
        for x, y, z in vertices:
            handle.write(f"v {x:.6f} {z:.6f} {-y:.6f}\n")
        for face in faces:
            handle.write("f " + " ".join(str(i + 1) for i in face) + "\n")
    return path


def write_obj_as_is(path, vertices, faces):
    """OBJ text with the coordinates as given (a Z-up file when they are Blender coordinates)."""
    with open(path, "w") as handle:
        for x, y, z in vertices:
            handle.write(f"v {x:.6f} {y:.6f} {z:.6f}\n")
        for face in faces:
            handle.write("f " + " ".join(str(i + 1) for i in face) + "\n")
    return path


def write_ply(path, vertices, faces):
    """ASCII PLY in Blender coordinates (the PLY importer keeps Z up)."""
    with open(path, "w") as handle:
        handle.write(f"ply\nformat ascii 1.0\nelement vertex {len(vertices)}\nproperty float x\nproperty float y\n"
                     f"property float z\nelement face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
        for x, y, z in vertices:
            handle.write(f"{x:.6f} {y:.6f} {z:.6f}\n")
        for face in faces:
            handle.write(f"{len(face)} " + " ".join(str(i) for i in face) + "\n")
    return path


def write_textured_glb(path):
    """A box whose image texture is red on one half and blue on the other, exported by Blender as GLB."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    corners, triangles = box_mesh(np.array([-0.5, -0.4, -0.3]), np.array([0.5, 0.4, 0.3]))
    mesh = bpy.data.meshes.new("textured_box")
    mesh.from_pydata(corners.tolist(), [], triangles.tolist())
    uv = mesh.uv_layers.new(name="UVMap")
    for loop in mesh.loops:
        x, y, _ = corners[loop.vertex_index]
        uv.data[loop.index].uv = (float(x) + 0.5, float(y) / 0.8 + 0.5)
    image = bpy.data.images.new("red_blue", 16, 16)
    pixels = np.zeros((16, 16, 4), dtype=np.float32)
    pixels[:, :8] = (1.0, 0.0, 0.0, 1.0)
    pixels[:, 8:] = (0.0, 0.0, 1.0, 1.0)
    image.pixels.foreach_set(pixels.ravel())
    image.filepath_raw = os.path.join(os.path.dirname(path), "red_blue.png")
    image.file_format = "PNG"
    image.save()
    material = bpy.data.materials.new("textured")
    tree = material.node_tree
    texture = tree.nodes.new("ShaderNodeTexImage")
    texture.image = image
    tree.links.new(texture.outputs["Color"], tree.nodes["Principled BSDF"].inputs["Base Color"])
    mesh.materials.append(material)
    obj = bpy.data.objects.new("textured_box", mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.ops.export_scene.gltf(filepath=path, export_format="GLB")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return path


def write_dataset(folder) -> dict:
    """Good and bad object files in ``folder``; returns {name: path}."""
    os.makedirs(folder, exist_ok=True)
    files = {
        "tetra": write_obj(os.path.join(folder, "tetra.obj"), TETRA_VERTICES, TETRA_FACES),
        "box": write_ply(os.path.join(folder, "box.ply"), *box_mesh()),
        "textured": write_textured_glb(os.path.join(folder, "textured.glb")),
    }
    files["unreadable"] = os.path.join(folder, "unreadable.glb")
    with open(files["unreadable"], "wb") as handle:
        handle.write(b"\x00\x01 this is not a glTF file")
    files["empty"] = os.path.join(folder, "empty.obj")
    with open(files["empty"], "w") as handle:
        handle.write("# an OBJ file without any geometry\n")
    files["zero"] = write_obj(os.path.join(folder, "zero.obj"), np.array([[0.2, 0.2, 0.2]] * 3), np.array([[0, 1, 2]]))
    grid = 60  # a dense grid: about 200 KB of OBJ text, over the tests' --max-file-mb
    xs, ys = np.meshgrid(np.linspace(0, 1, grid), np.linspace(0, 1, grid))
    vertices = np.stack([xs.ravel(), ys.ravel(), np.zeros(grid * grid)], axis=1)
    faces = [[r * grid + c, r * grid + c + 1, (r + 1) * grid + c] for r in range(grid - 1) for c in range(grid - 1)]
    files["huge"] = write_obj(os.path.join(folder, "huge.obj"), vertices, np.array(faces))
    return files


def silhouette_from_record(record: dict, view: dict, vertices, faces, from_file: bool = False) -> np.ndarray:
    """Boolean [H, W] mask of the mesh projected with the record's c2w and intrinsics: pixel centres inside any
    projected triangle. ``vertices``: Blender coordinates after import (mapped with the normalisation's scale and
    offset) or, ``from_file``, the source file's own coordinates (mapped with ``file_to_world``, the documented
    recipe)."""
    normalization = record["normalization"]
    if from_file:
        file_to_world = np.asarray(normalization["file_to_world"])
        world = (file_to_world @ np.c_[vertices, np.ones(len(vertices))].T).T[:, :3]
    else:
        world = np.asarray(vertices) * normalization["scale"] + np.asarray(normalization["offset"])
    c2w = np.asarray(view["c2w"])
    camera = (np.linalg.inv(c2w) @ np.c_[world, np.ones(len(world))].T).T[:, :3]
    camera_cv = camera * np.array([1.0, -1.0, -1.0])
    assert (camera_cv[:, 2] > 0).all(), "object behind the camera"
    pixels = (np.asarray(record["intrinsics"]["K"]) @ camera_cv.T).T
    uv = pixels[:, :2] / pixels[:, 2:3]
    height, width = record["intrinsics"]["height"], record["intrinsics"]["width"]
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    mask = np.zeros((height, width), dtype=bool)
    for a, b, c in (uv[list(face)] for face in faces):
        def side(p, q):
            return (q[0] - p[0]) * (ys - p[1]) - (q[1] - p[1]) * (xs - p[0])

        s1, s2, s3 = side(a, b), side(b, c), side(c, a)
        mask |= ((s1 >= 0) & (s2 >= 0) & (s3 >= 0)) | ((s1 <= 0) & (s2 <= 0) & (s3 <= 0))
    return mask


Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # glTF/OBJ (x, y, z) -> (x, -z, y)


def grow(mask: np.ndarray) -> np.ndarray:
    """The mask grown by one pixel in all 8 directions."""
    grown = mask.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = np.zeros_like(mask)
            shifted[max(dy, 0): mask.shape[0] + min(dy, 0), max(dx, 0): mask.shape[1] + min(dx, 0)] = \
                mask[max(-dy, 0): mask.shape[0] + min(-dy, 0), max(-dx, 0): mask.shape[1] + min(-dx, 0)]
            grown |= shifted
    return grown


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))
