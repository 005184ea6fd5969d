"""Camera codes against the reference functions (golden/cameras.json) and the geometry of the convention."""

from __future__ import annotations

import json

import pytest
import torch

from backend.diffusion.cameras import (
    camera_to_world,
    encode_c2w,
    encode_cameras,
    orbit_azimuths,
    reference_get_camera,
)


def golden_entries(golden_dir):
    return json.loads((golden_dir / "cameras.json").read_text())["entries"]


def test_every_reference_camera_is_reproduced(golden_dir):
    entries = golden_entries(golden_dir)
    assert len(entries) >= 20
    for entry in entries:
        args, expected = entry["args"], torch.tensor(entry["output"])
        if "get_camera_cond" in entry["function"]:
            codes = encode_cameras(args["elevation_deg"], args["azimuth_deg"], "isotropic3d")
        else:
            encoding = "isotropic3d" if entry["function"].startswith("Isotropic3D") else "mvdream"
            codes = reference_get_camera(
                args["num_frames"], args["elevation"], args["azimuth_start"], args["azimuth_span"], encoding
            )
        assert codes.dtype == torch.float32 and codes.shape == expected.shape
        assert (codes - expected).abs().max().item() < 1e-6, entry


def test_isotropic3d_double_conversion_makes_views_nearly_identical():
    codes = encode_cameras([15.0] * 4, orbit_azimuths(4), "isotropic3d")
    mvdream = encode_cameras([15.0] * 4, orbit_azimuths(4), "mvdream")
    assert (codes[0] - codes[3]).abs().max() < 0.12
    assert (mvdream[0] - mvdream[2]).abs().max() > 1.0


@pytest.mark.parametrize("elevation, azimuth, distance", [(0, 0, 1.5), (30, 90, 2.0), (-10, 225, 1.0), (60, 359, 3.0)])
def test_camera_to_world_looks_at_the_origin_in_blender_axes(elevation, azimuth, distance):
    c2w = camera_to_world(elevation, azimuth, distance)[0]
    rotation, position = c2w[:3, :3], c2w[:3, 3]
    assert torch.allclose(rotation.T @ rotation, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.linalg.det(rotation).item() == pytest.approx(1.0)
    assert position.norm().item() == pytest.approx(distance)
    # the camera looks along its local -Z, towards the origin
    view_direction = -rotation[:, 2]
    assert torch.allclose(view_direction, -position / position.norm(), atol=1e-12)
    # Z is up: elevation is the angle above the XY plane; local +Y (up) has a non-negative world Z
    assert torch.asin(position[2] / distance).rad2deg().item() == pytest.approx(elevation)
    assert rotation[2, 1].item() >= 0


def test_azimuth_zero_is_the_front_view_on_minus_y():
    position = camera_to_world(0, 0, 1.0)[0, :3, 3]
    assert torch.allclose(position, torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64), atol=1e-12)
    position = camera_to_world(0, 90, 1.0)[0, :3, 3]
    assert torch.allclose(position, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), atol=1e-12)


def test_codes_from_matrices_equal_codes_from_angles():
    """A c2w at any distance (e.g. from a renderer's JSON) encodes to MVDream's code for its angles."""
    c2w = camera_to_world([10.0, 20.0, 30.0], [0.0, 120.0, 240.0], 1.5)
    assert torch.allclose(encode_c2w(c2w), encode_cameras([10.0, 20.0, 30.0], [0.0, 120.0, 240.0], "mvdream"), atol=1e-6)


def test_unknown_encoding_is_refused():
    with pytest.raises(ValueError, match="unknown camera encoding"):
        encode_cameras(0, 0, "zero123")


def test_sphere_uniform_elevations_stop_at_the_references_19_47_degrees():
    import math

    from backend.diffusion.cameras import random_multiview_cameras

    generator = torch.Generator().manual_seed(0)
    cap = math.degrees(math.asin(1 / 3))  # 19.47: where the sphere branch tops out for the (0, 30) range
    tops = []
    for _ in range(40):  # one coin per call picks the branch for all 256 objects of the call
        tops.append(random_multiview_cameras(256, 1, generator).elevation.max().item())
    # The degree-uniform branch's maximum of 256 draws from U(0, 30) is above the cap (all 256 below it: 1e-48).
    degree_branch = [top for top in tops if top > cap + 1e-4]
    sphere_branch = [top for top in tops if top <= cap + 1e-4]
    assert degree_branch and sphere_branch  # both branches were drawn in 40 calls (each missing: 1e-12)
    assert all(top <= 30.0 for top in degree_branch)
    # The sphere branch reaches up to the cap, not beyond: its top of 256 draws is within 2 degrees (else: 1e-11)
    assert all(cap - 2.0 < top for top in sphere_branch)
