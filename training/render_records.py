"""Reads the training-data renderer's output folder: one sub-folder per object with PNGs and ``cameras.json``.

The one place that knows the renderer's file format (``blender_addon/core/render_plan.py``, format
``isotropic3d-render/1``). It reads only what training needs and ignores everything else, so later additions to the
format pass through. Angles are in degrees (falling back to the ``*_rad`` fields); a view's model camera code comes
from ``backend.diffusion.cameras.encode_cameras`` (the one camera module). No bpy here.

Folder rules, as the renderer writes them: an object folder is published by one rename when complete, so a
folder with ``cameras.json`` is finished; ``.partial/`` (and any other dot-folder) holds unfinished renders and
``manifest*.json`` the run's bookkeeping; both are skipped.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from backend.diffusion.cameras import encode_cameras
from backend.errors import UserError
from blender_addon.core.render_plan import RECORD_FILE

RECORD_FORMAT_PREFIX = "isotropic3d-render/"
SUPPORTED_MAJOR_VERSIONS = (1,)
FIXED_SET, RANDOM_SET = "fixed", "random"


class DatasetError(UserError, ValueError):
    """The dataset folder cannot be trained on; the message says which folder or file and why."""


@dataclass(frozen=True)
class ViewRecord:
    """One rendered view: image file name (inside the object folder) and camera angles in degrees."""

    file: str
    view_set: str  # "fixed" or "random"
    index: int
    elevation_deg: float
    azimuth_deg: float


@dataclass(frozen=True)
class RenderedObject:
    """A finished object folder: its fixed-view and random-view sets, each sorted by index."""

    object_id: str
    folder: Path
    fixed_views: tuple[ViewRecord, ...]
    random_views: tuple[ViewRecord, ...]
    resolution: int | None  # pixels (square images), when the record states it

    def image_path(self, view: ViewRecord) -> Path:
        return self.folder / view.file


def view_angle_deg(view: dict, name: str, where: str) -> float:
    """A view's ``elevation``/``azimuth`` in degrees (records give ``*_deg`` or ``*_rad``)."""
    if f"{name}_deg" in view:
        value = float(view[f"{name}_deg"])
    elif f"{name}_rad" in view:
        value = math.degrees(float(view[f"{name}_rad"]))
    else:
        raise DatasetError(f"{where}: a view has neither {name}_deg nor {name}_rad")
    if not math.isfinite(value):
        raise DatasetError(f"{where}: a view has a non-finite {name}")
    return value


def view_set_name(view: dict) -> str:
    """The view set a view belongs to (``set``, or the prefix of its file name)."""
    if "set" in view:
        return str(view["set"])
    stem = str(view.get("file", ""))
    return stem.split("_", 1)[0]  # the renderer names files "<set>_<index>.png"


def load_record(path: str | os.PathLike) -> dict:
    """An object's ``cameras.json`` (the file, or the object folder holding it), format checked: the one reader of
    render records. DatasetError naming the file and the problem."""
    record_path = Path(path)
    if record_path.is_dir() or record_path.name != RECORD_FILE:
        record_path = record_path / RECORD_FILE
    folder = record_path.parent
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{folder}: no {RECORD_FILE} (the object's render is unfinished)") from None
    except (OSError, ValueError) as error:
        raise DatasetError(f"{record_path}: unreadable ({error})") from None
    if not isinstance(record, dict):
        raise DatasetError(f"{record_path}: not a render record (a JSON object is expected)")
    fmt = str(record.get("format", ""))
    major = fmt[len(RECORD_FORMAT_PREFIX) :].split(".", 1)[0] if fmt.startswith(RECORD_FORMAT_PREFIX) else ""
    if not major.isdigit() or int(major) not in SUPPORTED_MAJOR_VERSIONS:
        raise DatasetError(f"{record_path}: format {fmt!r} is not a supported {RECORD_FORMAT_PREFIX}1 render record")
    return record


def read_object(folder: str | os.PathLike) -> RenderedObject:
    """Reads and checks one object folder; raises DatasetError naming the folder and the problem."""
    folder = Path(folder)
    record_path = folder / RECORD_FILE
    record = load_record(folder)
    views = record.get("views")
    if not isinstance(views, list) or not views:
        raise DatasetError(f"{record_path}: no views")
    sets: dict[str, list[ViewRecord]] = {FIXED_SET: [], RANDOM_SET: []}
    for position, view in enumerate(views):
        if not isinstance(view, dict) or "file" not in view:
            raise DatasetError(f"{record_path}: view {position} has no file name")
        view_set = view_set_name(view)
        if view_set not in sets:
            continue  # a view set training does not use
        sets[view_set].append(
            ViewRecord(
                file=str(view["file"]),
                view_set=view_set,
                index=int(view.get("index", len(sets[view_set]))),
                elevation_deg=view_angle_deg(view, "elevation", str(record_path)),
                azimuth_deg=view_angle_deg(view, "azimuth", str(record_path)),
            )
        )
    missing = [v.file for s in sets.values() for v in s if not (folder / v.file).is_file()]
    if missing:
        raise DatasetError(f"{folder}: {len(missing)} image(s) listed in {RECORD_FILE} are missing, e.g. {missing[0]}")
    intrinsics = record.get("intrinsics") or {}
    resolution = intrinsics.get("width")
    return RenderedObject(
        object_id=str(record.get("object_id", folder.name)),
        folder=folder,
        fixed_views=tuple(sorted(sets[FIXED_SET], key=lambda v: v.index)),
        random_views=tuple(sorted(sets[RANDOM_SET], key=lambda v: v.index)),
        resolution=int(resolution) if resolution else None,
    )


def scan_render_folder(root: str | os.PathLike, skip_incomplete: bool = False) -> list[RenderedObject]:
    """All finished objects under ``root``, sorted by object id.

    Raises DatasetError when ``root`` is missing or holds no finished object, and (unless ``skip_incomplete``)
    when an object folder is unfinished or broken.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    objects, broken = [], []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            objects.append(read_object(entry.path))
        except DatasetError as error:
            broken.append(str(error))
    if broken and not skip_incomplete:
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise DatasetError(
            f"{len(broken)} unfinished or broken object folder(s) in {root}: {broken[0]}{more}; "
            "finish the render (iso3d-render resumes) or pass --skip-incomplete"
        )
    if not objects:
        partial = root / ".partial"
        if partial.is_dir() and any(partial.iterdir()):
            raise DatasetError(
                f"{root} has no finished object yet, only unfinished renders in .partial/ "
                "(the render was interrupted: run iso3d-render again to resume)"
            )
        raise DatasetError(f"{root} has no rendered objects (expected sub-folders with {RECORD_FILE} and PNGs)")
    return objects


def camera_codes(views: list[ViewRecord] | tuple[ViewRecord, ...], encoding: str) -> torch.Tensor:
    """Model camera codes [len(views), 16] (float32) of rendered views, in the given camera encoding (the views'
    angles through backend.diffusion.cameras, the one encoder; training.camera_codes.camera_codes does the same for
    a whole cameras.json record read by ``load_record``)."""
    return encode_cameras([v.elevation_deg for v in views], [v.azimuth_deg for v in views], encoding)
