"""The service's job store: persisted job records, their files, and the replay of a job's latest state.

Each job lives in ``<data>/jobs/<id>/`` (the id is generated here, never taken from a client): ``job.json`` (the
record), ``input.png`` (not for finish jobs), ``views/`` (latest multi-view images + cameras), ``mesh_latest.npz``
(latest mesh; a finish job adds ``mesh_lod<i>.npz``) and the job's own work files (``work/``; for generate: the
NeRF checkpoint and final meshes). A restarted service finds unfinished jobs there and runs them again
(``job_queue``); generate jobs resume from their last checkpoint. A cancelled generate job keeps the checkpoint of
the step it stopped at, and ``resume`` puts it back into the queue (``resuming.resume_refusal`` says why a job
cannot be resumed).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from backend.events import Done, Event, Failed, MeshUpdate, Progress, Views
from blender_addon.core.atomic_files import open_atomically, write_bytes_atomically, write_json_atomically


JOB_ID = re.compile(r"^[0-9a-f]{16}$")
FINISHED = ("done", "failed", "cancelled")
WORK_FOLDER = "work"  # a job's own work files inside its folder (a generate job's checkpoint and meshes)


@dataclass
class JobRecord:
    id: str
    kind: str
    settings: dict
    name: str = ""
    status: str = "queued"  # queued, running, done, failed, cancelled
    created: float = field(default_factory=time.time)
    phase: str = ""
    step: int = 0
    total: int = 0
    elapsed: float = 0.0
    eta: float | None = None
    losses: dict = field(default_factory=dict)
    error_code: str = ""
    error_message: str = ""
    artifacts: dict = field(default_factory=dict)
    mesh_step: int | None = None
    mesh_final: bool = False
    views_kind: str = ""
    runs: int = 0  # how often it was started (a restart resumes it)
    crashes: int = 0  # how often the service died while it ran (a retry budget)
    model: str = ""  # the model it was made with; another model does not resume it
    owner: str = ""  # the CURVE public key (Z85) of the client that submitted it; "" without CURVE
    note: str = ""  # what the finished job adapted, in words (Done.note)

    def summary(self) -> dict:
        return {
            "job": self.id,
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "step": self.step,
            "total": self.total,
            "created": self.created,
        }


_RECORD_TYPES = {"id": str, "kind": str, "settings": dict, "name": str, "status": str, "created": (int, float),
                 "phase": str, "step": int, "total": int, "elapsed": (int, float), "eta": (int, float, type(None)),
                 "losses": dict, "error_code": str, "error_message": str, "artifacts": dict,
                 "mesh_step": (int, type(None)), "mesh_final": bool, "views_kind": str, "runs": int, "crashes": int,
                 "model": str, "owner": str, "note": str}
STATUSES = ("queued", "running", *FINISHED)


def record_from_json(text: str, directory_name: str) -> JobRecord:
    """A job record from its ``job.json``, every field type-checked; ValueError saying what is wrong."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("the record is not a JSON object")
    for name in ("id", "kind", "settings"):
        if name not in data:
            raise ValueError(f"the record has no '{name}'")
    values = {}
    for name, value in data.items():
        kind = _RECORD_TYPES.get(name)
        if kind is None:
            continue  # a field of a later release
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
            raise ValueError(f"the record's '{name}' is of the wrong type")
        values[name] = value
    record = JobRecord(**values)
    if record.id != directory_name or not JOB_ID.match(record.id):
        raise ValueError("the record's id does not match its folder")
    if record.status not in STATUSES:
        raise ValueError(f"unknown status {record.status[:20]!r}")
    return record


class JobStore:
    """Job records and their files under ``root``. Nothing stored can stop the service: a folder whose record
    cannot be read is listed as ``damaged`` with the reason (and never run); a job made with another model is
    listed as ``needs_model`` and not resumed; a job that was running when the service died counts a crash."""

    def __init__(self, root: str | Path, model_name: str = ""):
        self.root = Path(root) / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        self.model_name = model_name
        self.records: dict[str, JobRecord] = {}
        self.damaged: dict[str, tuple[str, float]] = {}  # folder name -> (reason, folder time)
        for directory in sorted(self.root.iterdir()):
            if not directory.is_dir() or directory.is_symlink() or not JOB_ID.match(directory.name):
                continue
            try:
                text = (directory / "job.json").read_text(encoding="utf-8")
                record = record_from_json(text, directory.name)
            except (OSError, ValueError, TypeError, RecursionError) as error:
                reason = "job.json is missing" if isinstance(error, FileNotFoundError) else \
                    f"job.json cannot be read: {str(error)[:120]}"
                self.mark_damaged(directory.name, reason)
                continue
            if record.status == "running":  # the service died while it ran
                record.status, record.crashes = "queued", record.crashes + 1
            self.records[record.id] = record

    def mark_damaged(self, job_id: str, reason: str) -> None:
        try:
            when = (self.root / job_id).stat().st_mtime
        except OSError:
            when = 0.0
        self.damaged[job_id] = (reason, when)
        self.records.pop(job_id, None)

    def needs_other_model(self, record: JobRecord) -> bool:
        return bool(record.model and self.model_name and record.model != self.model_name)

    def summary(self, record: JobRecord) -> dict:
        from backend.service.options import sanitize_name
        from backend.service.resuming import resume_refusal

        summary = record.summary()
        summary["name"] = sanitize_name(record.name)  # records of earlier releases kept names of any length
        if record.status not in FINISHED and self.needs_other_model(record):
            summary["status"] = "needs_model"
            summary["reason"] = f"made with the model {record.model!r}; restart the backend with it to resume"
        summary["resumable"] = resume_refusal(self, record) is None
        return summary

    def summaries(self, visible: Callable[[JobRecord], bool] = lambda record: True) -> list[dict]:
        """Every job, oldest first, as ``jobs`` lists them (damaged ones with their reason)."""
        listed = [(r.created, self.summary(r)) for r in self.records.values() if visible(r)]
        listed += [(when, {"job": job_id, "kind": "", "name": "", "status": "damaged", "step": 0, "total": 0,
                           "created": when, "reason": reason}) for job_id, (reason, when) in self.damaged.items()
                   if visible(None)]
        return [summary for _, summary in sorted(listed, key=lambda item: item[0])]

    def directory(self, job_id: str) -> Path:
        if not isinstance(job_id, str) or not JOB_ID.match(job_id) or job_id not in self.records:
            raise KeyError(job_id)
        return self.root / job_id

    def create(self, kind: str, settings: dict, image_png: bytes | None, name: str = "", owner: str = "") -> JobRecord:
        record = JobRecord(id=uuid.uuid4().hex[:16], kind=kind, settings=settings, name=name, model=self.model_name,
                           owner=owner)
        directory = self.root / record.id
        directory.mkdir(parents=True)
        try:
            if image_png is not None:
                write_bytes_atomically(directory / "input.png", image_png)
            self.records[record.id] = record
            self.save(record)
        except BaseException:
            self.delete(record.id)
            raise
        return record

    def delete(self, job_id: str) -> None:
        """Remove a job and its folder (finished jobs, refused submissions, pruning)."""
        import shutil

        self.records.pop(job_id, None)
        self.damaged.pop(job_id, None)
        if JOB_ID.match(job_id):
            shutil.rmtree(self.root / job_id, ignore_errors=True)

    def prunable(self) -> list[tuple[str, float]]:
        """(id, created) of the jobs that may be deleted: finished and damaged ones."""
        return [(r.id, r.created) for r in self.records.values() if r.status in FINISHED] + \
            [(job_id, when) for job_id, (_, when) in self.damaged.items()]

    def artifact_path(self, record: JobRecord, name: str) -> Path:
        """The file of a job's artifact ``name``, inside the job's folder; KeyError for anything else."""
        relative = record.artifacts.get(name)
        if not isinstance(relative, str):
            raise KeyError(name)
        directory = self.directory(record.id).resolve()
        path = (directory / relative).resolve()
        if directory not in path.parents or not path.is_file():
            raise KeyError(name)
        return path

    def save(self, record: JobRecord) -> None:
        write_json_atomically(self.root / record.id / "job.json", asdict(record))

    def input_png(self, job_id: str) -> bytes:
        return (self.directory(job_id) / "input.png").read_bytes()

    def unfinished(self) -> list[JobRecord]:
        """Jobs to run again, oldest first (not those made with another model)."""
        return sorted((r for r in self.records.values() if r.status not in FINISHED and not self.needs_other_model(r)),
                      key=lambda r: r.created)

    # -- the latest state, for replay after a reconnect --------------------------------------------------------
    def record_event(self, record: JobRecord, event: Event) -> None:
        """Fold an event into the record and keep what a reattaching client needs on disk."""
        directory = self.directory(record.id)
        if isinstance(event, Progress):
            record.phase, record.step, record.total = event.phase, event.step, event.total
            record.elapsed, record.eta, record.losses = event.elapsed, event.eta, dict(event.losses)
            return  # saved with the next other event or state change (not on every step)
        if isinstance(event, Views):
            views = directory / "views"
            views.mkdir(exist_ok=True)
            with open_atomically(views / "latest.npz") as handle:
                np.savez(
                    handle,
                    images=event.images,
                    elevations=np.asarray(event.elevations),
                    azimuths=np.asarray(event.azimuths),
                    c2w=event.c2w,
                    step=np.asarray(-1 if event.step is None else event.step),
                )
            record.views_kind = event.kind
        elif isinstance(event, MeshUpdate):
            arrays = dict(vertices=event.vertices, faces=event.faces, vertex_colors=event.vertex_colors)
            if event.uvs is not None and event.texture is not None:
                arrays.update(uvs=event.uvs, texture=event.texture)
            name = _mesh_file(event.level)
            with open_atomically(directory / f"{name}.npz") as handle:
                np.savez(handle, **arrays)
            record.mesh_step, record.mesh_final = event.step, event.final
        elif isinstance(event, Done):  # artifacts stored relative to the job's folder
            record.status = "done"
            record.artifacts = {name: _relative(Path(path), directory) for name, path in event.artifacts.items()}
            record.note = event.note
        elif isinstance(event, Failed):
            record.status = "cancelled" if event.code == "cancelled" else "failed"
            record.error_code, record.error_message = event.code, event.message
        self.save(record)

    def replay(self, record: JobRecord) -> Iterator[Event]:
        """The job's latest state as events: progress, latest views, latest mesh, then done/failed if finished."""
        directory = self.directory(record.id)
        if record.total:
            yield Progress(record.phase, record.step, record.total, record.elapsed, record.eta, record.losses)
        views = directory / "views" / "latest.npz"
        if views.is_file():
            with np.load(views) as data:
                step = int(data["step"])
                yield Views(
                    record.views_kind or "preview",
                    data["images"],
                    data["elevations"].tolist(),
                    data["azimuths"].tolist(),
                    data["c2w"],
                    None if step < 0 else step,
                )
        levels = sorted(int(path.stem[len("mesh_lod"):]) for path in directory.glob("mesh_lod*.npz")
                        if path.stem[len("mesh_lod"):].isdigit())
        for level in [0, *levels]:
            mesh = directory / f"{_mesh_file(level)}.npz"
            if not mesh.is_file():
                continue
            with np.load(mesh) as data:
                yield MeshUpdate(
                    data["vertices"], data["faces"], data["vertex_colors"], record.mesh_step or 0, record.mesh_final,
                    uvs=data["uvs"] if "uvs" in data else None, texture=data["texture"] if "texture" in data else None,
                    level=level,
                )
        if record.status == "done":
            yield Done(record.artifacts, record.note)
        elif record.status in ("failed", "cancelled"):
            yield Failed(record.error_code or record.status, record.error_message or record.status)


def _relative(path: Path, directory: Path) -> str:
    try:
        return str(path.resolve().relative_to(directory.resolve()))
    except ValueError:
        return str(path)  # outside the job (not fetchable)


def _mesh_file(level: int) -> str:
    """The latest mesh of a level: ``mesh_latest`` (level 0: the main mesh), ``mesh_lod<i>``."""
    return "mesh_latest" if level == 0 else f"mesh_lod{level}"
