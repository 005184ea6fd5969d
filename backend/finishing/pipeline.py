"""The finishing pipeline: a job's field -> finished asset files (main face budget + LODs), written atomically."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field as dataclass_field
from pathlib import Path

import numpy as np
import torch

from backend.errors import SettingsError, UserError
from backend.finishing.asset_export import ASSET_FORMATS, asset_files
from backend.finishing.cleanup import clean_surface
from backend.finishing.decimate import decimate
from backend.finishing.placement import place_upright
from backend.finishing.surface import extract_surface
from backend.finishing.texture_bake import bake_albedo, query_albedo
from backend.finishing.uv_unwrap import UnwrappedMesh, unwrap
from backend.nerf.mesh import Mesh, field_device
from backend.settings import check_bounds, setting
from blender_addon.core.atomic_files import write_files_atomically

MAX_TEXTURE_SIZE = 8192
MANIFEST_SUFFIX = "_finish.json"


MAX_LODS = 8


@dataclass
class FinishOptions:
    """The settings of finishing a job's field (wire keys = field names). faces: the main asset's face budget; lods:
    further budgets (each an ``<name>_lod<i>`` asset); texture: texels a side (power of two, 16..8192); size: the
    largest bounding-box side in world units (metres); resolution/threshold: marching-cubes grid cells and density
    (1/world-unit), None = the job's mesh settings; min_component_fraction: floaters below this fraction of faces
    are dropped; max_hole_perimeter: holes up to this perimeter (world units of the field) are closed."""

    faces: int = setting(20000, min=1, max=10_000_000, help="face budget of the asset")
    texture: int = setting(1024, min=16, max=MAX_TEXTURE_SIZE, help="albedo texture size in texels, a power of two")
    lods: tuple[int, ...] = setting((), min=1, max=10_000_000, help="further face budgets, one LOD asset each")
    formats: tuple[str, ...] = setting(("glb",), choices=ASSET_FORMATS, help="file formats written")
    size: float = setting(1.0, min=0.001, max=1000.0, help="largest side of the asset in metres / Blender units")
    resolution: int | None = setting(None, min=8, max=1024,
                                     help="marching-cubes grid cells a side (none: the job's)")
    threshold: float | None = setting(None, min=0.0, max=1e4, help="surface density, 1/world-unit (none: the job's)")
    min_component_fraction: float = setting(0.01, min=0.0, max=0.99,
                                            help="drop floating parts under this fraction of the faces")
    max_hole_perimeter: float = setting(0.1, min=0.0, max=100.0, help="close holes up to this perimeter (field units)")

    def validate(self) -> None:
        """SettingsError naming the setting, before any work is done."""
        t = self.texture
        if isinstance(t, int) and (t < 16 or t > MAX_TEXTURE_SIZE or t & (t - 1)):
            raise SettingsError(f"setting 'texture': texture size {t} must be a power of two from 16 to "
                                f"{MAX_TEXTURE_SIZE}")
        for key, budgets in (("faces", (self.faces,)), ("lods", self.lods)):
            for budget in budgets:
                if isinstance(budget, int) and budget <= 0:
                    raise SettingsError(f"setting '{key}': face budget {budget} must be a positive number of faces")
        if isinstance(self.formats, tuple) and not self.formats:
            raise SettingsError("setting 'formats' needs at least one format")
        if isinstance(self.lods, tuple) and len(self.lods) > MAX_LODS:
            raise SettingsError(f"setting 'lods' has {len(self.lods)} face budgets; at most {MAX_LODS}")
        check_bounds(self)


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
    notes: list[str] = dataclass_field(default_factory=list)  # what was adapted to the surface, in words
    files: dict[str, bytes] = dataclass_field(default_factory=dict, repr=False)
    meshes: list[TexturedMesh] = dataclass_field(default_factory=list, repr=False)  # one per level, main first


Progress = Callable[[str, int, int], None]  # (stage just done, stages done, stages in all)


def stage_count(options: FinishOptions, levels: int | None = None) -> int:
    """Stages of a finish: extraction and clean-up, then decimate, unwrap, bake and encode per level (``levels``:
    the levels made, once the surface is known; before that every budget counts as one)."""
    return 2 + 4 * (1 + len(options.lods) if levels is None else levels)


@dataclass
class LevelPlan:
    """The levels a surface allows: ``targets`` face counts, main first (the surface's own count = kept whole);
    ``budgets`` the requested budget of each; ``notes`` what was adapted, in words."""

    targets: list[int]
    budgets: list[int]
    notes: list[str]


def plan_levels(surface_faces: int, faces: int, lods: tuple[int, ...] | list[int]) -> LevelPlan:
    """Fit the budgets to a surface of ``surface_faces`` faces: a budget at or above it keeps the surface whole;
    an LOD never has more faces than the level above it, so an LOD budget at or above that level's face count
    would repeat it and is left out (the LODs that remain are numbered in order)."""
    main = min(faces, surface_faces)
    notes = []
    if faces >= surface_faces:
        how = "under" if surface_faces < faces else "exactly"
        notes.append(f"the surface has {surface_faces:,} faces, {how} the {faces:,} budget: kept whole")
    targets, budgets = [main], [faces]
    for index, budget in enumerate(lods, start=1):
        above = targets[-1]
        if budget >= above:
            notes.append(f"LOD budget {index} ({budget:,} faces) is not below the level above it ({above:,} "
                         "faces): left out")
            continue
        targets.append(budget)
        budgets.append(budget)
    return LevelPlan(targets, budgets, notes)


@torch.no_grad()
def finish_field(field, options: FinishOptions, name: str = "asset", default_resolution: int = 256,
                 default_threshold: float = 10.0, progress: Progress | None = None) -> FinishResult:
    """Run every stage on ``field`` and return the files in memory (nothing is written). ``progress`` is called
    after each stage; an exception it raises (a cancel) stops the finish there."""
    options.validate()
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
    plan = plan_levels(len(cleaned.faces), options.faces, options.lods)
    total = stage_count(options, len(plan.targets))
    _, offset, scale = place_upright(np.asarray(cleaned.vertices), options.size)
    levels, files, meshes = [], {}, []
    for index, (budget, target) in enumerate(zip(plan.budgets, plan.targets)):
        level_name = name if index == 0 else f"{name}_lod{index}"
        simplified = decimate(cleaned, target)
        if len(simplified.faces) == 0:
            setting_name = "faces" if index == 0 else "lods"
            raise UserError(f"setting '{setting_name}': a budget of {budget:,} leaves nothing of the "
                            f"surface ({len(cleaned.faces):,} faces); give a larger budget")
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
    return FinishResult(levels, len(cleaned.faces), offset.tolist(), scale, seconds, plan.notes, files, meshes)


def finish_job(job_dir: str | Path, out_dir: str | Path | None = None, options: FinishOptions | None = None,
               device: str = "cpu", name: str | None = None, progress: Progress | None = None) -> FinishResult:
    """Finish the job in ``job_dir`` into ``out_dir`` (default: ``job_dir/finished``). Files are named after the
    job folder (``chair.job`` -> ``chair.glb``, ``chair_lod1.glb``, ...) plus ``<name>_finish.json`` (settings,
    face counts, placement). Bad input raises UserError before anything is written."""
    from backend.finishing.job_field import load_job_field

    options = options or FinishOptions()
    options.validate()
    job_dir = Path(job_dir)
    field, config = load_job_field(job_dir, device)
    name = name or (job_dir.name[:-4] if job_dir.name.endswith(".job") and len(job_dir.name) > 4 else "asset")
    result = finish_field(field, options, name, config.mesh.resolution, config.mesh.density_threshold, progress)
    manifest = {"job": str(job_dir.resolve()), "options": asdict(options), "surface_faces": result.surface_faces,
                "placement": {"offset": result.offset, "scale": result.scale, "up": "+Z (Blender)"},
                "levels": [asdict(level) for level in result.levels], "notes": result.notes,
                "seconds": result.seconds}
    files = dict(result.files)
    files[f"{name}{MANIFEST_SUFFIX}"] = json.dumps(manifest, indent=2).encode("utf-8")
    write_files_atomically(files, Path(out_dir) if out_dir else job_dir / "finished")
    return result
