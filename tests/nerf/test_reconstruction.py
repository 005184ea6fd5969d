"""Reconstruction: fit the field to Blender renders of a known object (cameras from the project's camera code),
extract the mesh, and compare it with the ground truth. Pins the camera convention shared by Blender renders,
rays and the field, and shows that renderer, field and mesh extraction work together."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from backend.diffusion.cameras import make_view_cameras
from backend.nerf.field import RadianceField
from backend.nerf.mesh import extract_mesh
from backend.nerf.rays import camera_rays
from backend.nerf.renderer import VolumeRenderer
from tests.helpers.paths import REPO_ROOT
from tests.helpers.processes import python, run
from tests.helpers.targets import chamfer_distance, small_config

# Blender renders in a child process (bpy never loads into this torch-heavy one).
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="bpy is not installed")]
CHAMFER_BOUND = 0.045  # world units; the object is about 1 unit across, one mesh grid cell is 2/48 = 0.042


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    out = tmp_path_factory.mktemp("known_object")
    script = Path(__file__).with_name("render_known_object.py")
    done = run(python(script, out), cwd=REPO_ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def load_views(folder: Path):
    views = json.loads((folder / "cameras.json").read_text())
    images = []
    for view in views:
        rgba = np.asarray(Image.open(folder / view["image"]).convert("RGBA"), dtype=np.float32) / 255.0
        images.append(rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:]))
    cameras = make_view_cameras([v["elevation"] for v in views], [v["azimuth"] for v in views],
                                [v["distance"] for v in views], [v["fovy"] for v in views])
    assert np.allclose(cameras.c2w.numpy(), np.array([v["c2w"] for v in views]), atol=1e-5)
    return torch.from_numpy(np.stack(images)), cameras


# slow: Blender renders and a fit (~40 s); a quality check of the field and renderer, whose parts have their own tests
@pytest.mark.slow
def test_fitting_blender_renders_recovers_the_object(renders):
    images, cameras = load_views(renders)
    n, height, width, _ = images.shape
    origins, directions = camera_rays(cameras.c2w, cameras.fovy, height, width)
    origins, directions, colours = origins.reshape(-1, 3), directions.reshape(-1, 3), images.reshape(-1, 3)

    config = small_config()
    torch.manual_seed(0)
    field = RadianceField(config.field)
    renderer = VolumeRenderer(config.renderer, config.field.radius)
    optimizer = torch.optim.Adam([{"params": field.grid_parameters(), "lr": 0.02},
                                  {"params": field.mlp_parameters(), "lr": 0.01}], eps=1e-15)
    generator = torch.Generator().manual_seed(0)
    # 150 steps (measured, 2-core AMD EPYC): photometric L1 0.0043, Chamfer 0.036, mirrored 0.068; 250 steps gave
    # 0.0033, 0.034, 0.067 for 1.8x the CPU time: the bounds below are set by the 48-cell mesh grid, not the fit
    for step in range(150):
        renderer.update_grid(step, field)
        batch = torch.randint(0, origins.shape[0], (3072,), generator=generator)
        out = renderer.render_rays(field, origins[batch], directions[batch], stratified=True, generator=generator,
                                   with_normals=False)
        loss = torch.nn.functional.mse_loss(out.rgb, colours[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        rendered = renderer.render_views(field, cameras, height, width).rgb
    photometric = float((rendered - images).abs().mean())
    mesh = extract_mesh(field, 48, config.mesh.density_threshold, 0.01)
    truth = np.load(renders / "ground_truth.npz")
    truth_points, _ = trimesh.sample.sample_surface(trimesh.Trimesh(truth["vertices"], truth["faces"]), 5000, seed=0)
    fitted_points, _ = trimesh.sample.sample_surface(mesh.to_trimesh(), 5000, seed=0)
    chamfer = chamfer_distance(fitted_points, truth_points)
    # A mirrored or rotated convention would put the ball on the wrong side: its distance is far above the bound.
    mirrored = chamfer_distance(fitted_points * np.array([-1.0, 1.0, 1.0]), truth_points)
    print(f"reconstruction: photometric L1 {photometric:.4f}, chamfer {chamfer:.4f} (mirrored {mirrored:.4f})")
    assert photometric < 0.03
    assert chamfer < CHAMFER_BOUND
    assert mirrored > chamfer + 0.02
    red = mesh.vertex_colors[:, 0].astype(int) - mesh.vertex_colors[:, 2]
    ball = (np.linalg.norm(mesh.vertices - np.array([0.35, -0.3, 0.2]), axis=1) < 0.27) & (mesh.vertices[:, 0] > 0.3)
    box = np.abs(mesh.vertices[:, 0]) < 0.2  # the box is 0.5 wide in x; the ball starts at x = 0.13
    assert ball.sum() > 20 and box.sum() > 20
    assert (red[box] > 0).mean() > 0.9 and (red[ball] < 0).mean() > 0.9  # colours on the right parts
