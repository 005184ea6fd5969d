"""Finished-asset files, built in memory (``blender_addon.core.atomic_files.write_files_atomically`` puts them on disk).

GLB: the mesh Y-up (glTF's convention; Blender's importer turns it back to Z-up) with the albedo texture embedded
as the baseColorTexture of a metallic-roughness material (metallic 0, roughness 1). OBJ: Y-up, with an MTL
(map_Kd) and the texture as PNG beside it. PLY: Z-up (Blender's PLY importer reads Z as up), vertex colours
(the field's albedo at the vertices), no texture.
"""

from __future__ import annotations

import io

import numpy as np
import trimesh
from PIL import Image

from backend.finishing.uv_unwrap import UnwrappedMesh
from backend.nerf.mesh import Z_UP_TO_Y_UP, Mesh

ASSET_FORMATS = ("glb", "obj", "ply")


def textured_trimesh(mesh: UnwrappedMesh, texture: np.ndarray, name: str) -> trimesh.Trimesh:
    """A Y-up trimesh with UVs and a PBR material whose base colour is ``texture`` uint8 [H, W, 3]."""
    material = trimesh.visual.material.PBRMaterial(
        name=name, baseColorTexture=Image.fromarray(texture), baseColorFactor=[255, 255, 255, 255],
        metallicFactor=0.0, roughnessFactor=1.0, doubleSided=False)
    vertices = np.asarray(mesh.vertices, np.float64) @ Z_UP_TO_Y_UP.T
    return trimesh.Trimesh(vertices, mesh.faces, visual=trimesh.visual.TextureVisuals(uv=mesh.uvs, material=material),
                           process=False)


def glb_bytes(mesh: UnwrappedMesh, texture: np.ndarray, name: str) -> bytes:
    return trimesh.exchange.gltf.export_glb(textured_trimesh(mesh, texture, name))


def obj_files(mesh: UnwrappedMesh, texture: np.ndarray, name: str) -> dict[str, bytes]:
    """{name.obj, name.mtl, name.png}: the MTL is a plain diffuse material (Kd 1, no specular) with map_Kd."""
    text, _ = trimesh.exchange.obj.export_obj(textured_trimesh(mesh, texture, name), include_normals=True,
                                              include_color=False, include_texture=True, return_texture=True,
                                              mtl_name=f"{name}.mtl")
    png = io.BytesIO()
    Image.fromarray(texture).save(png, format="PNG")
    mtl = f"newmtl {name}\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\nmap_Kd {name}.png\n"
    return {f"{name}.obj": text.encode("utf-8"), f"{name}.mtl": mtl.encode("utf-8"), f"{name}.png": png.getvalue()}


def ply_bytes(mesh: UnwrappedMesh, vertex_colors: np.ndarray) -> bytes:
    """Binary PLY, Z-up, vertex colours uint8 [V, 3] (seam vertices merged back)."""
    shape = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    shape.merge_vertices(merge_tex=True, merge_norm=True)
    colors = np.zeros((len(shape.vertices), 3), np.uint8)
    colors[shape.faces.reshape(-1)] = vertex_colors[mesh.faces.reshape(-1)]
    return Mesh(np.asarray(shape.vertices, np.float32), shape.faces.astype(np.int32), colors).to_trimesh().export(
        file_type="ply")


def asset_files(mesh: UnwrappedMesh, texture: np.ndarray, vertex_colors: np.ndarray, name: str,
                formats: tuple[str, ...]) -> dict[str, bytes]:
    """File name -> contents for each requested format."""
    files: dict[str, bytes] = {}
    if "glb" in formats:
        files[f"{name}.glb"] = glb_bytes(mesh, texture, name)
    if "obj" in formats:
        files.update(obj_files(mesh, texture, name))
    if "ply" in formats:
        files[f"{name}.ply"] = ply_bytes(mesh, vertex_colors)
    return files


