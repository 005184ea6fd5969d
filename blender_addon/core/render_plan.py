"""What a training-data render produces: settings, view angles, cameras, intrinsics and the per-object JSON.

No bpy here (numpy and stdlib only), so the headless driver, the add-on and the tests share it.

Conventions (identical to ``backend.diffusion.cameras``, which this package may not import):
- World: Blender's, Z up. The object is normalised so that its largest bounding-box side is 1 (``normalize``
  "box", the paper's data) or its bounding sphere has radius 0.5 (``normalize`` "sphere": no view crops at the
  default distance and field of view), centred at the origin.
- ``file_to_world``: 4x4 matrix from the source file's own coordinates (its scene frame, node transforms applied)
  to the render world: the importer's axis conversion (Y-up glTF/OBJ turned Z-up, or ``up_axis``) times the
  normalisation. ``normalization.scale``/``offset`` act on the Z-up frame after that axis conversion.
- Angles: degrees unless a name ends in ``_rad``. Azimuth 0 puts the camera on the -Y axis (Blender's front
  view), azimuth 90 on +X; positive elevation raises the camera above the XY plane.
- ``c2w``: 4x4 camera-to-world matrix with columns [right, up, back, position]; the camera looks along its local
  -Z with local +Y up. It is exactly the ``matrix_world`` of a Blender camera.
- Intrinsics: pixels, origin at the top-left corner of the image, x right, y down. A world point p projects with
  ``K @ diag(1, -1, -1) @ (inverse(c2w) @ p)[:3]`` (the flip turns Blender's camera axes into OpenCV's).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

RECORD_FORMAT = "isotropic3d-render/1"
RECORD_FILE = "cameras.json"
OBJECT_EXTENSIONS = (".glb", ".gltf", ".obj", ".fbx", ".ply", ".stl", ".blend")  # files the renderer imports
# SyncDreamer's camera: 35 mm lens on a 32 mm sensor.
DEFAULT_FOV_DEG = math.degrees(2.0 * math.atan(16.0 / 35.0))
BACKGROUNDS = ("white", "transparent")
ENGINES = ("cycles", "eevee")
DEVICES = ("cpu", "gpu")
NORMALIZATIONS = ("box", "sphere")
UP_AXES = ("format", "y", "z")  # "format": the file format's own convention (below); "y"/"z": the file says so
# Up axis each format declares and Blender's importer converts from (FBX: read from the file, not known here).
FORMAT_UP_AXIS = {".glb": "y", ".gltf": "y", ".obj": "y", ".fbx": None, ".ply": "z", ".stl": "z", ".blend": "z"}
# Y-up (glTF, OBJ: forward -Z) to Blender's Z-up: (x, y, z) -> (x, -z, y).
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
VIEW_SETS = ("fixed", "random")
CONVENTION = {
    "world": "Blender world, Z up; the object is centred at the origin and scaled so its largest bounding-box side "
    "is 1 (normalization.mode 'box') or its bounding sphere has radius 0.5 ('sphere')",
    "file_to_world": "normalization.file_to_world: 4x4, row-major; maps a point of the SOURCE FILE (its own "
    "coordinates, scene node transforms applied) to the render world: world = file_to_world @ [p, 1]; it is the "
    "importer's axis conversion (glTF/OBJ are Y-up, turned Z-up) followed by the normalisation; null when the "
    "axis conversion is not known (FBX)",
    "normalization": "world = scale * p_z_up + offset, where p_z_up is the object after the axis conversion "
    "(bbox_*_z_up are its bounds there); faces counts triangles",
    "angles": "azimuth 0 = camera on the -Y axis, 90 = on +X; elevation positive above the XY plane; "
    "*_deg in degrees, *_rad in radians",
    "c2w": "4x4 camera-to-world, row-major nested lists; columns [right, up, back, position]; the camera looks "
    "along its local -Z with +Y up (Blender/OpenGL camera); equals the Blender camera's matrix_world",
    "intrinsics": "pixels, origin at the image's top-left corner, x right, y down; a world point p projects to "
    "K @ diag(1, -1, -1) @ (inv(c2w) @ p)[:3] (OpenCV camera axes)",
    "model_camera_code": "training.camera_codes converts this file to the model's 16-d camera codes",
}


class RenderSettingsError(ValueError):
    """A render setting is out of range; the message names the setting and the allowed values."""


@dataclass(frozen=True)
class RenderSettings:
    """Settings of one training-data render; the defaults follow the Isotropic3D paper's data (see README)."""

    resolution: int = 256  # pixels, square images
    fixed_views: int = 16  # azimuths evenly over 360 degrees at fixed_elevation_deg
    fixed_elevation_deg: float = 30.0
    random_views: int = 16  # the same evenly spaced azimuths, elevations uniform in the range below
    random_elevation_min_deg: float = -10.0
    random_elevation_max_deg: float = 40.0
    azimuth_start_deg: float = 0.0
    distance: float = 1.5  # camera distance from the origin, in units of the normalised object
    fov_deg: float = DEFAULT_FOV_DEG  # full field of view of the square image
    background: str = "white"  # "white" (RGB PNG) or "transparent" (RGBA PNG, alpha kept)
    engine: str = "cycles"
    device: str = "cpu"
    samples: int = 32  # Cycles path samples per pixel (EEVEE: TAA samples)
    denoise: bool = True
    seed: int = 0  # base seed; each object's seed is derived from it and the object id
    hdri_strength_min: float = 0.6
    hdri_strength_max: float = 1.4
    hdris: tuple[str, ...] = field(default_factory=tuple)  # file names to draw from; empty = all shipped ones
    threads: int = 0  # render threads; 0 = all cores
    max_faces: int = 5_000_000  # objects with more triangles fail (a guard against out-of-memory)
    normalize: str = "box"  # "box": largest side 1 (crops box-like objects at distance 1.5); "sphere": radius 0.5
    up_axis: str = "format"  # the source files' up axis: "format" (glTF/OBJ Y, PLY/STL Z), "y" or "z"

    def __post_init__(self):
        object.__setattr__(self, "hdris", tuple(self.hdris))
        checks = [
            ("resolution", 8 <= self.resolution <= 8192, "between 8 and 8192 pixels"),
            ("fixed_views", 0 <= self.fixed_views <= 1000, "between 0 and 1000"),
            ("random_views", 0 <= self.random_views <= 1000, "between 0 and 1000"),
            ("fixed_views + random_views", self.fixed_views + self.random_views >= 1, "at least 1"),
            ("fixed_elevation_deg", -89.0 <= self.fixed_elevation_deg <= 89.0, "between -89 and 89 degrees"),
            ("random_elevation_min_deg", -89.0 <= self.random_elevation_min_deg <= 89.0, "between -89 and 89"),
            ("random_elevation_max_deg", -89.0 <= self.random_elevation_max_deg <= 89.0, "between -89 and 89"),
            (
                "random elevation range",
                self.random_elevation_min_deg <= self.random_elevation_max_deg,
                "min <= max",
            ),
            ("distance", 0.0 < self.distance < 1000.0 and math.isfinite(self.distance), "positive"),
            ("fov_deg", 1.0 <= self.fov_deg <= 170.0, "between 1 and 170 degrees"),
            ("background", self.background in BACKGROUNDS, " or ".join(BACKGROUNDS)),
            ("engine", self.engine in ENGINES, " or ".join(ENGINES)),
            ("device", self.device in DEVICES, " or ".join(DEVICES)),
            ("samples", 1 <= self.samples <= 1_000_000, "at least 1"),
            ("seed", 0 <= self.seed < 2**63, "a non-negative integer"),
            ("hdri_strength_min", 0.0 <= self.hdri_strength_min, "non-negative"),
            ("hdri strength range", self.hdri_strength_min <= self.hdri_strength_max, "min <= max"),
            ("threads", 0 <= self.threads <= 1024, "0 (all cores) or a thread count"),
            ("max_faces", self.max_faces >= 1, "at least 1"),
            ("normalize", self.normalize in NORMALIZATIONS, " or ".join(NORMALIZATIONS)),
            ("up_axis", self.up_axis in UP_AXES, " or ".join(UP_AXES)),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise RenderSettingsError(f"invalid render setting {name}: must be {allowed}")

    @property
    def views_per_object(self) -> int:
        return self.fixed_views + self.random_views

    def to_dict(self) -> dict:
        data = asdict(self)
        data["hdris"] = list(self.hdris)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> RenderSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RenderSettingsError(f"unknown render setting(s): {', '.join(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class View:
    """One rendered view: which set, its index in the set, the image file and the camera angles (degrees)."""

    view_set: str
    index: int
    elevation_deg: float
    azimuth_deg: float
    distance: float

    @property
    def file_name(self) -> str:
        return f"{self.view_set}_{self.index:03d}.png"


@dataclass(frozen=True)
class ObjectPlan:
    """Everything random about one object's render, drawn from its seed: views and lighting."""

    object_id: str
    seed: int  # the Cycles seed, 0 <= seed < 2**31
    views: tuple[View, ...]
    hdri: str  # file name of the chosen HDRI
    hdri_rotation_deg: float  # rotation of the environment about the world Z axis
    hdri_strength: float


def object_seed(base_seed: int, object_id: str) -> int:
    """A seed in [0, 2**31) that depends only on the base seed and the object id (not on order or worker)."""
    digest = hashlib.sha256(f"{base_seed}:{object_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def evenly_spaced_azimuths(count: int, start_deg: float = 0.0) -> list[float]:
    """``count`` azimuths (degrees) evenly over 360 degrees from ``start_deg``."""
    return [start_deg + k * 360.0 / count for k in range(count)]


def plan_object(settings: RenderSettings, object_id: str, available_hdris: list[str]) -> ObjectPlan:
    """The views and lighting of one object; the same settings and id always give the same plan."""
    if not available_hdris:
        raise RenderSettingsError("no HDRI to light with: the HDRI folder is empty or none of --hdri was found")
    seed = object_seed(settings.seed, object_id)
    rng = np.random.Generator(np.random.PCG64(seed))
    views = [
        View("fixed", k, settings.fixed_elevation_deg, azimuth, settings.distance)
        for k, azimuth in enumerate(evenly_spaced_azimuths(settings.fixed_views, settings.azimuth_start_deg))
    ]
    elevations = rng.uniform(settings.random_elevation_min_deg, settings.random_elevation_max_deg, settings.random_views)
    views += [
        View("random", k, float(elevation), azimuth, settings.distance)
        for k, (elevation, azimuth) in enumerate(
            zip(elevations, evenly_spaced_azimuths(settings.random_views, settings.azimuth_start_deg))
        )
    ]
    hdris = sorted(available_hdris)
    hdri = hdris[int(rng.integers(len(hdris)))]
    rotation = float(rng.uniform(0.0, 360.0))
    strength = float(rng.uniform(settings.hdri_strength_min, settings.hdri_strength_max))
    return ObjectPlan(object_id, seed, tuple(views), hdri, rotation, strength)


def camera_to_world(elevation_deg: float, azimuth_deg: float, distance: float) -> np.ndarray:
    """The 4x4 camera-to-world matrix (float64, Blender Z-up) of a camera at the given angles (degrees) and
    distance, looking at the origin. Equals ``backend.diffusion.cameras.camera_to_world`` (tested)."""
    elevation, azimuth = math.radians(elevation_deg), math.radians(azimuth_deg)
    position = np.array(
        [math.cos(elevation) * math.sin(azimuth), -math.cos(elevation) * math.cos(azimuth), math.sin(elevation)]
    )
    forward = -position
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    up /= np.linalg.norm(up)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, position * distance
    return c2w


def intrinsics(settings: RenderSettings) -> dict:
    """Pinhole intrinsics in pixels for the square image (origin top-left, x right, y down)."""
    size = settings.resolution
    focal = 0.5 * size / math.tan(math.radians(settings.fov_deg) / 2.0)
    centre = 0.5 * size
    return {
        "width": size,
        "height": size,
        "fx": focal,
        "fy": focal,
        "cx": centre,
        "cy": centre,
        "K": [[focal, 0.0, centre], [0.0, focal, centre], [0.0, 0.0, 1.0]],
        "fov_x_deg": settings.fov_deg,
        "fov_y_deg": settings.fov_deg,
    }


def object_record(
    settings: RenderSettings,
    plan: ObjectPlan,
    source: str,
    normalization: dict,
    render_info: dict,
    quality: dict | None = None,
) -> dict:
    """The per-object JSON (``cameras.json``): conventions, intrinsics, normalisation, lighting and views."""
    views = []
    for view in plan.views:
        views.append(
            {
                "file": view.file_name,
                "set": view.view_set,
                "index": view.index,
                "elevation_deg": view.elevation_deg,
                "azimuth_deg": view.azimuth_deg,
                "elevation_rad": math.radians(view.elevation_deg),
                "azimuth_rad": math.radians(view.azimuth_deg),
                "distance": view.distance,
                "c2w": camera_to_world(view.elevation_deg, view.azimuth_deg, view.distance).tolist(),
            }
        )
    return {
        "format": RECORD_FORMAT,
        "object_id": plan.object_id,
        "source": source,
        "convention": CONVENTION,
        "intrinsics": intrinsics(settings),
        "normalization": normalization,
        "quality": quality or {},
        "lighting": {
            "hdri": plan.hdri,
            "rotation_deg": plan.hdri_rotation_deg,
            "strength": plan.hdri_strength,
        },
        "render": {**render_info, "seed": plan.seed, "settings": settings.to_dict()},
        "views": views,
    }


def expected_files(settings: RenderSettings) -> list[str]:
    """File names of one finished object folder (images, then the JSON)."""
    names = [f"fixed_{k:03d}.png" for k in range(settings.fixed_views)]
    names += [f"random_{k:03d}.png" for k in range(settings.random_views)]
    return names + [RECORD_FILE]


def file_axes_to_world(extension: str, up_axis: str) -> np.ndarray | None:
    """3x3 matrix from a source file's coordinates to Blender's Z-up frame for the declared up axis, or None when
    the format's axes are read from the file itself (FBX) and no ``up_axis`` is given."""
    declared = FORMAT_UP_AXIS.get(extension.lower()) if up_axis == "format" else up_axis
    if declared is None:
        return None
    return Y_UP_TO_Z_UP.copy() if declared == "y" else np.eye(3)


def normalization_transform(vertices_z_up: np.ndarray, mode: str) -> tuple[float, np.ndarray]:
    """(scale, offset) with world = scale * p + offset: centred on the bounding box, largest side 1 ("box") or
    bounding sphere (about the box centre) of radius 0.5 ("sphere")."""
    low, high = vertices_z_up.min(axis=0), vertices_z_up.max(axis=0)
    centre = (low + high) / 2.0
    if mode == "sphere":
        scale = 0.5 / float(np.linalg.norm(vertices_z_up - centre, axis=1).max())
    else:
        scale = 1.0 / float((high - low).max())
    return scale, -scale * centre


def outside_frame_fraction(world_vertices: np.ndarray, settings: RenderSettings, plan: ObjectPlan) -> float:
    """The largest fraction, over the object's views, of its (normalised) vertices that project outside the
    image or lie behind the camera: 0 means no view crops the object."""
    if len(world_vertices) == 0:
        return 0.0
    camera_matrix = np.asarray(intrinsics(settings)["K"])
    size = settings.resolution
    homogeneous = np.c_[world_vertices, np.ones(len(world_vertices))]
    worst = 0.0
    for view in plan.views:
        camera = (np.linalg.inv(camera_to_world(view.elevation_deg, view.azimuth_deg, view.distance)) @ homogeneous.T).T
        depth = -camera[:, 2]  # Blender cameras look along -Z
        pixels = (camera_matrix @ (camera[:, :3] * np.array([1.0, -1.0, -1.0])).T).T
        with np.errstate(divide="ignore", invalid="ignore"):
            u, v = pixels[:, 0] / pixels[:, 2], pixels[:, 1] / pixels[:, 2]
        outside = (depth <= 0) | (u < 0) | (u > size) | (v < 0) | (v > size)
        worst = max(worst, float(outside.mean()))
    return worst


def likely_z_up(file_vertices: np.ndarray, extension: str, up_axis: str) -> bool:
    """A heuristic for a Z-up model in a Y-up format (it would render lying on its side): in the file's
    coordinates it rests on the plane z = 0 but not on y = 0 (within 1% of its size). False when the file is
    declared Z-up or its format's axes are not known."""
    declared = FORMAT_UP_AXIS.get(extension.lower()) if up_axis == "format" else up_axis
    if declared != "y" or len(file_vertices) == 0:
        return False
    low, high = file_vertices.min(axis=0), file_vertices.max(axis=0)
    tolerance = 0.01 * float((high - low).max())
    return bool(abs(low[2]) <= tolerance and abs(low[1]) > tolerance)


def is_flagged(quality: dict) -> bool:
    """Whether an object's quality record (``cameras.json``'s "quality", the manifest's "flags") needs a look."""
    return bool(quality.get("missing_textures") or quality.get("likely_z_up")
                or quality.get("outside_frame_fraction", 0.0) > 0.0)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def verify_object_folder(folder: str, settings: RenderSettings, object_id: str | None = None) -> str | None:
    """Checks that ``folder`` holds one whole object of ``settings``: every expected image present and a complete
    PNG (signature and final IEND chunk), ``cameras.json`` readable and listing exactly those images (and the
    object id). Returns None when it does, else the reason."""
    import json
    import os

    expected = expected_files(settings)
    try:
        present = set(os.listdir(folder))
    except OSError as error:
        return f"unreadable folder ({error.strerror})"
    missing = [name for name in expected if name not in present]
    if missing:
        return f"{len(missing)} of {len(expected)} files missing, e.g. {missing[0]}"
    for name in expected[:-1]:
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as handle:
                head = handle.read(8)
                handle.seek(max(0, os.fstat(handle.fileno()).st_size - 12))
                tail = handle.read(12)
        except OSError as error:
            return f"{name} unreadable ({error.strerror})"
        if head != _PNG_SIGNATURE or b"IEND" not in tail:
            return f"{name} is not a complete PNG"
    try:
        with open(os.path.join(folder, RECORD_FILE), encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError) as error:
        return f"{RECORD_FILE} unreadable ({error})"
    files = [view.get("file") for view in record.get("views", []) if isinstance(view, dict)]
    if sorted(files) != sorted(expected[:-1]):
        return f"{RECORD_FILE} lists {len(files)} views, {len(expected) - 1} expected"
    if object_id is not None and record.get("object_id") != object_id:
        return f"{RECORD_FILE} belongs to object {record.get('object_id')!r}"
    return None
