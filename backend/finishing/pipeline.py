"""The finishing pipeline: a job's field -> finished asset files (main face budget + LODs), written atomically."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field as dataclass_field
from pathlib import Path

import numpy as np
import torch

from backend.errors import UserError
from backend.finishing.asset_export import ASSET_FORMATS, asset_files
from backend.finishing.cleanup import clean_surface
from backend.finishing.decimate import decimate
from backend.finishing.placement import place_upright
from backend.finishing.surface import extract_surface
from backend.finishing.texture_bake import bake_albedo, field_device, query_albedo
from backend.finishing.uv_unwrap import UnwrappedMesh, unwrap
from backend.nerf.mesh import Mesh
from blender_addon.atomic_files import write_files_atomically

MAX_TEXTURE_SIZE = 8192
MANIFEST_SUFFIX = "_finish.json"


@dataclass
class FinishOptions:
    """faces: the main asset's face budget; lods: further budgets (each an ``<name>_lod<i>`` asset); texture:
    texels a side (power of two, 16..8192); size: the largest bounding-box side in world units (metres);
    resolution/threshold: marching-cubes grid cells and density (1/world-unit), None = the job's mesh settings;
    min_component_fraction: floaters below this fraction of faces are dropped; max_hole_perimeter: holes up to
    this perimeter (world units of the field) are closed."""

    faces: int = 20000
    texture: int = 1024
    lods: tuple[int, ...] = ()
    formats: tuple[str, ...] = ("glb",)
    size: float = 1.0
    resolution: int | None = None
    threshold: float | None = None
    min_component_fraction: float = 0.01
    max_hole_perimeter: float = 0.1


def validate_options(options: FinishOptions) -> None:
    """Raise UserError for settings that cannot work, before any work is done."""
    t = options.texture
    if t < 16 or t > MAX_TEXTURE_SIZE or t & (t - 1):
        raise UserError(f"texture size {t} must be a power of two from 16 to {MAX_TEXTURE_SIZE}")
    for budget in (options.faces, *options.lods):
        if budget <= 0:
            raise UserError(f"face budget {budget} must be a positive number of faces")
    if not options.formats or set(options.formats) - set(ASSET_FORMATS):
        raise UserError(f"formats {','.join(options.formats)}: choose from {','.join(ASSET_FORMATS)}")
    if not options.size > 0:
        raise UserError(f"size {options.size} must be positive (world units)")


@dataclass
class FinishedLevel:
    """One finished face budget: its files and measured counts."""

    name: str
    face_budget: int
    faces: int
    vertices: int
    files: list[str] = dataclass_field(default_factory=list)


@dataclass
class TexturedMesh:
    """One finished level as it goes into a scene: ``mesh`` welded (no seam copies), placed, Z-up, with vertex
    colours; ``corner_uvs`` float32 [F, 3, 2] (v up); ``texture`` uint8 [H, W, 3] (row 0 at the top)."""

    mesh: Mesh
    corner_uvs: np.ndarray
    texture: np.ndarray


@dataclass
class FinishResult:
    levels: list[FinishedLevel]
    surface_faces: int
    offset: list[float]  # placed = (field point + offset) * scale
    scale: float
    seconds: dict[str, float]
    files: dict[str, bytes] = dataclass_field(default_factory=dict, repr=False)
    meshes: list[TexturedMesh] = dataclass_field(default_factory=list, repr=False)  # one per level, main first


Progress = Callable[[str, int, int], None]  # (stage just done, stages done, stages in all)


def stage_count(options: FinishOptions) -> int:
    """Stages of a finish: extraction and clean-up, then decimate, unwrap, bake and encode per level."""
    return 2 + 4 * (1 + len(options.lods))


@torch.no_grad()
def finish_field(field, options: FinishOptions, name: str = "asset", default_resolution: int = 256,
                 default_threshold: float = 10.0, progress: Progress | None = None) -> FinishResult:
    """Run every stage on ``field`` and return the files in memory (nothing is written). ``progress`` is called
    after each stage; an exception it raises (a cancel) stops the finish there."""
    validate_options(options)
    clock = time.perf_counter()
    seconds: dict[str, float] = {}
    done, total = 0, stage_count(options)

    def lap(stage: str) -> None:
        nonlocal clock, done
        now = time.perf_counter()
        seconds[stage] = seconds.get(stage, 0.0) + now - clock
        clock = now
        done += 1
        if progress is not None:
            progress(stage, done, total)

    surface = extract_surface(field, options.resolution or default_resolution,
                              default_threshold if options.threshold is None else options.threshold)
    lap("extract")
    cleaned = clean_surface(surface.to_trimesh(), options.min_component_fraction, options.max_hole_perimeter)
    lap("cleanup")
    budgets = [options.faces, *options.lods]
    too_many = [b for b in budgets if b > len(cleaned.faces)]
    if too_many:
        raise UserError(f"face budget {too_many[0]} is larger than the surface ({len(cleaned.faces)} faces): "
                        "lower it, or raise --resolution")
    _, offset, scale = place_upright(np.asarray(cleaned.vertices), options.size)
    levels, files, meshes = [], {}, []
    for index, budget in enumerate(budgets):
        level_name = name if index == 0 else f"{name}_lod{index}"
        simplified = decimate(cleaned, budget)
        lap("decimate")
        unwrapped = unwrap(simplified, options.texture)
        lap("unwrap")
        texture = bake_albedo(field, unwrapped, options.texture)
        welded = np.asarray(simplified.vertices, np.float32)
        points = torch.as_tensor(welded, device=field_device(field))
        welded_colors = (query_albedo(field, points) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
        vertex_colors = welded_colors[unwrapped.source_vertex]
        lap("bake")
        placed = UnwrappedMesh((unwrapped.vertices + offset) * scale, unwrapped.faces, unwrapped.uvs)
        level_files = asset_files(placed, texture, vertex_colors, level_name, options.formats)
        lap("encode")
        files.update(level_files)
        levels.append(FinishedLevel(level_name, budget, len(unwrapped.faces), len(unwrapped.vertices),
                                    sorted(level_files)))
        welded_mesh = Mesh(((welded + offset) * scale).astype(np.float32),
                           unwrapped.source_vertex[unwrapped.faces].astype(np.int32), welded_colors)
        meshes.append(TexturedMesh(welded_mesh, unwrapped.corner_uvs(), texture))
    return FinishResult(levels, len(cleaned.faces), offset.tolist(), scale, seconds, files, meshes)


def finish_job(job_dir: str | Path, out_dir: str | Path | None = None, options: FinishOptions | None = None,
               device: str = "cpu", name: str | None = None, progress: Progress | None = None) -> FinishResult:
    """Finish the job in ``job_dir`` into ``out_dir`` (default: ``job_dir/finished``). Files are named after the
    job folder (``chair.job`` -> ``chair.glb``, ``chair_lod1.glb``, ...) plus ``<name>_finish.json`` (settings,
    face counts, placement). Bad input raises UserError before anything is written."""
    from backend.finishing.job_field import load_job_field

    options = options or FinishOptions()
    validate_options(options)
    job_dir = Path(job_dir)
    field, config = load_job_field(job_dir, device)
    name = name or (job_dir.name[:-4] if job_dir.name.endswith(".job") and len(job_dir.name) > 4 else "asset")
    result = finish_field(field, options, name, config.mesh.resolution, config.mesh.density_threshold, progress)
    manifest = {"job": str(job_dir.resolve()), "options": asdict(options), "surface_faces": result.surface_faces,
                "placement": {"offset": result.offset, "scale": result.scale, "up": "+Z (Blender)"},
                "levels": [asdict(level) for level in result.levels], "seconds": result.seconds}
    files = dict(result.files)
    files[f"{name}{MANIFEST_SUFFIX}"] = json.dumps(manifest, indent=2).encode("utf-8")
    write_files_atomically(files, Path(out_dir) if out_dir else job_dir / "finished")
    return result
