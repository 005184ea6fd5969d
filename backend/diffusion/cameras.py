"""Camera conventions of the multi-view model: the one place where cameras are built and encoded.

World frame: Blender's, Z up. Azimuth 0 puts the camera on the -Y axis (Blender's front view), azimuth 90 on
+X; positive elevation raises the camera. A camera-to-world matrix (c2w) has columns [right, up, back,
position]: the camera looks along its local -Z with local +Y up (the OpenGL and Blender camera convention), so a
c2w from here can be assigned to a Blender camera's ``matrix_world`` as it is.

The model is conditioned on a 16-d *camera code*: the c2w flattened row-major, built MVDream's way (a Y-up
look-at on the unit sphere, then rotated into Blender's Z-up frame). Two encodings exist:

- ``"mvdream"``: angles in degrees converted to radians once (MVDream's ``get_camera``);
- ``"isotropic3d"``: Isotropic3D's code converts degrees to radians twice, so the effective angle is
  ``deg * (pi/180)**2`` (its ``get_camera_cond``). The published Isotropic3D weights were used with this code.

``reference_get_camera`` reproduces the reference ``get_camera`` functions exactly, including Isotropic3D's
loop that re-converts the elevation once more for every view.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from backend.models.configs import DEFAULT_CAMERA_ENCODING

CameraEncoding = Literal["isotropic3d", "mvdream"]
CAMERA_ENCODINGS: tuple[str, ...] = (DEFAULT_CAMERA_ENCODING, "mvdream")

# Y-up (OpenGL world) -> Z-up (Blender world): (x, y, z) -> (x, -z, y).
_Y_UP_TO_Z_UP = torch.tensor(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64
)


def _as_float64(values: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64).reshape(-1)


def look_at_c2w(elevation_rad, azimuth_rad, distance=1.0) -> torch.Tensor:
    """Camera-to-world matrices [N, 4, 4] (float64, Blender Z-up world) looking at the origin.

    Angles in radians; ``distance`` is the camera's distance from the origin.
    """
    elevation = _as_float64(elevation_rad)
    azimuth = _as_float64(azimuth_rad)
    elevation, azimuth = torch.broadcast_tensors(elevation, azimuth)
    distance = _as_float64(distance).expand_as(elevation)
    # Y-up construction (MVDream): camera on the sphere at (cos e sin a, sin e, cos e cos a).
    position = torch.stack(
        [torch.cos(elevation) * torch.sin(azimuth), torch.sin(elevation), torch.cos(elevation) * torch.cos(azimuth)],
        dim=-1,
    )
    forward = -position / position.norm(dim=-1, keepdim=True)
    world_up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand_as(forward)
    right = torch.linalg.cross(forward, world_up, dim=-1)
    right = right / right.norm(dim=-1, keepdim=True)
    up = torch.linalg.cross(right, forward, dim=-1)
    up = up / up.norm(dim=-1, keepdim=True)
    c2w = torch.eye(4, dtype=torch.float64).repeat(elevation.shape[0], 1, 1)
    c2w[:, :3, :3] = torch.stack([right, up, -forward], dim=-1)
    c2w[:, :3, 3] = position * distance[:, None]
    return _Y_UP_TO_Z_UP @ c2w


def camera_to_world(elevation_deg, azimuth_deg, distance=1.0) -> torch.Tensor:
    """True-geometry camera-to-world matrices [N, 4, 4] (float64, Blender Z-up) from angles in degrees."""
    return look_at_c2w(torch.deg2rad(_as_float64(elevation_deg)), torch.deg2rad(_as_float64(azimuth_deg)), distance)


def effective_angles_rad(elevation_deg, azimuth_deg, encoding: CameraEncoding) -> tuple[torch.Tensor, torch.Tensor]:
    """The angles (radians) that the given encoding actually feeds into the look-at construction."""
    elevation = torch.deg2rad(_as_float64(elevation_deg))
    azimuth = torch.deg2rad(_as_float64(azimuth_deg))
    if encoding == "isotropic3d":
        elevation, azimuth = torch.deg2rad(elevation), torch.deg2rad(azimuth)
    elif encoding != "mvdream":
        raise ValueError(f"unknown camera encoding {encoding!r}; choose one of {', '.join(CAMERA_ENCODINGS)}")
    return elevation, azimuth


def encode_cameras(elevation_deg, azimuth_deg, encoding: CameraEncoding = DEFAULT_CAMERA_ENCODING) -> torch.Tensor:
    """Camera codes [N, 16] (float32) for views given by elevation and azimuth in degrees."""
    elevation, azimuth = effective_angles_rad(elevation_deg, azimuth_deg, encoding)
    return look_at_c2w(elevation, azimuth).reshape(-1, 16).float()


def encode_c2w(c2w: torch.Tensor) -> torch.Tensor:
    """Camera codes [N, 16] from true camera-to-world matrices in this module's convention (``mvdream`` encoding).

    The model sees rotation-only extrinsics: the translation is normalised to unit length, as MVDream's
    ``normalize_camera`` does.
    """
    c2w = torch.as_tensor(c2w, dtype=torch.float64).reshape(-1, 4, 4).clone()
    translation = c2w[:, :3, 3]
    c2w[:, :3, 3] = translation / (translation.norm(dim=-1, keepdim=True) + 1e-8)
    return c2w.reshape(-1, 16).float()


def orbit_azimuths(num_views: int, azimuth_start: float = 0.0, azimuth_span: float = 360.0) -> list[float]:
    """``num_views`` azimuths (degrees) evenly spaced over ``azimuth_span`` from ``azimuth_start``."""
    if num_views < 1:
        raise ValueError("num_views must be at least 1")
    gap = azimuth_span / num_views
    return [azimuth_start + k * gap for k in range(num_views)]


def reference_get_camera(
    num_frames: int,
    elevation: float = 15.0,
    azimuth_start: float = 0.0,
    azimuth_span: float = 360.0,
    encoding: CameraEncoding = DEFAULT_CAMERA_ENCODING,
) -> torch.Tensor:
    """The reference repositories' ``get_camera`` [num_frames, 16], quirks included.

    ``"isotropic3d"``: Isotropic3D's version, whose loop converts the elevation to radians again for every view
    (view k uses deg2rad applied k+2 times in all). ``"mvdream"``: MVDream's, one conversion.
    """
    azimuths = orbit_azimuths(num_frames, azimuth_start, azimuth_span)
    if encoding == "mvdream":
        return encode_cameras([elevation] * num_frames, azimuths, "mvdream")
    if encoding != "isotropic3d":
        raise ValueError(f"unknown camera encoding {encoding!r}; choose one of {', '.join(CAMERA_ENCODINGS)}")
    elevations = []
    value = float(elevation)
    for _ in azimuths:
        value = math.radians(value)
        elevations.append(value)
    # Each entry has been converted once already; encode_cameras' isotropic3d path would convert twice more.
    return encode_cameras(elevations, [math.radians(a) for a in azimuths], "mvdream")


@dataclass(frozen=True)
class ViewCameras:
    """A batch of N = objects x views_per_object pinhole cameras looking at the origin, object-major.

    Angles in degrees; ``distance`` in world units; ``fovy`` the vertical field of view in degrees;
    ``c2w`` float32 [N, 4, 4] in this module's convention (columns right, up, back, position).
    """

    elevation: torch.Tensor
    azimuth: torch.Tensor
    distance: torch.Tensor
    fovy: torch.Tensor
    c2w: torch.Tensor
    views_per_object: int

    def __len__(self) -> int:
        return int(self.c2w.shape[0])

    def codes(self, encoding: CameraEncoding) -> torch.Tensor:
        """Camera codes [N, 16] the model is conditioned on (from the angles, as the reference SDS does)."""
        return encode_cameras(self.elevation, self.azimuth, encoding)


def make_view_cameras(elevation_deg, azimuth_deg, distance, fovy_deg, views_per_object: int = 1) -> ViewCameras:
    """Cameras from per-view angles (degrees), distances and vertical fields of view (degrees)."""
    elevation, azimuth = torch.broadcast_tensors(_as_float64(elevation_deg), _as_float64(azimuth_deg))
    distance = _as_float64(distance).expand_as(elevation).clone()
    fovy = _as_float64(fovy_deg).expand_as(elevation).clone()
    c2w = camera_to_world(elevation, azimuth, distance).float()
    return ViewCameras(elevation.float(), azimuth.float(), distance.float(), fovy.float(), c2w, views_per_object)


def random_multiview_cameras(
    num_objects: int,
    views_per_object: int,
    generator: torch.Generator,
    elevation_range: tuple[float, float] = (0.0, 30.0),
    azimuth_range: tuple[float, float] = (0.0, 360.0),
    fovy_range: tuple[float, float] = (15.0, 60.0),
    relative_radius_range: tuple[float, float] = (0.8, 1.0),
) -> ViewCameras:
    """SDS training cameras as threestudio's ``random_multiview`` draws them (docs/reference-fidelity.md, camera
    conventions, "SDS cameras").

    The views of one object share elevation, fovy and distance; their azimuths are 360/views apart from a random
    offset. Elevation: with probability 1/2 uniform in degrees, else uniform on the sphere (one coin per batch).
    The sphere branch is the reference's formula, ``asin(2u - 1)`` with u uniform in ``[(lo + 90) / 180,
    (hi + 90) / 180]``, which treats the range's degree fractions as sine fractions: with the default (0, 30) it
    reaches only asin(1/3) = 19.47 degrees, so the reference's elevations in that branch are capped at 19.47 degrees.
    Kept as the reference has it.
    Distance = U(relative_radius_range) / tan(fovy / 2), so the unit sphere fills a similar part of every image.
    """

    def uniform(count: int, low: float, high: float) -> torch.Tensor:
        return torch.rand(count, generator=generator, dtype=torch.float64) * (high - low) + low

    elevation_lo, elevation_hi = elevation_range
    if torch.rand(1, generator=generator).item() < 0.5:
        elevation = uniform(num_objects, elevation_lo, elevation_hi)
    else:
        lo, hi = (elevation_lo + 90.0) / 180.0, (elevation_hi + 90.0) / 180.0
        elevation = torch.rad2deg(torch.asin(2.0 * uniform(num_objects, lo, hi) - 1.0))
    offsets = torch.rand(num_objects, 1, generator=generator, dtype=torch.float64)
    steps = torch.arange(views_per_object, dtype=torch.float64)[None, :]
    azimuth = ((offsets + steps) / views_per_object).reshape(-1) * (azimuth_range[1] - azimuth_range[0])
    azimuth = azimuth + azimuth_range[0]
    fovy = uniform(num_objects, *fovy_range)
    distance = uniform(num_objects, *relative_radius_range) / torch.tan(torch.deg2rad(fovy) / 2.0)
    repeat = lambda values: values.repeat_interleave(views_per_object)  # noqa: E731 - object-major rows
    return make_view_cameras(repeat(elevation), azimuth, repeat(distance), repeat(fovy), views_per_object)
