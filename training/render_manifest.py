"""The dataset manifest of a render run: which objects are done and which failed, with the reason.

One JSON file per shard in the output folder (``manifest.json``, or ``manifest-shard-I-of-N.json`` when
sharded, so machines sharing a folder never write the same file), rewritten atomically after every object. A
finished object's folder (checked whole and published by one rename) is the ground truth: on resume every folder
is checked again (``check_done_folder``) and counts as done only when whole, even when a kill came between the
rename and the manifest update; one that fails the check is removed and rendered again.

Each done entry has the source, render seconds, ``finished_at`` (Unix time) and the object's quality ``flags``
(from its ``cameras.json``); each failed entry the reason. ``objects_total`` is the shard's object count, so
``summary`` (``iso3d-render status``) can say what remains; ``merge`` joins the shards' manifests.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import time

from blender_addon.core.atomic_files import write_json_atomically
from blender_addon.core.render_plan import RECORD_FILE, RenderSettings, is_flagged, verify_object_folder

MANIFEST_FORMAT = "isotropic3d-render-manifest/1"


class ManifestError(ValueError):
    """The output folder's manifest does not fit this run; the message says why."""


def manifest_path(out_dir: str, shard_index: int, num_shards: int) -> str:
    if num_shards == 1:
        return os.path.join(out_dir, "manifest.json")
    return os.path.join(out_dir, f"manifest-shard-{shard_index:05d}-of-{num_shards:05d}.json")


MERGED_MANIFEST = "manifest-merged.json"


def check_done_folder(out_dir: str, object_id: str, settings: RenderSettings) -> str | None:
    """None when ``out_dir/object_id`` is a whole object of these settings, else why not ("absent" if none)."""
    folder = os.path.join(out_dir, object_id)
    if not os.path.isdir(folder):
        return "absent"
    return verify_object_folder(folder, settings, object_id)


def remove_broken_folder(out_dir: str, object_id: str, staging_dir: str):
    """Moves a folder that failed ``check_done_folder`` out of sight in one rename, then deletes it."""
    os.makedirs(staging_dir, exist_ok=True)
    retired = os.path.join(staging_dir, f"broken-{object_id}.{os.getpid()}")
    os.replace(os.path.join(out_dir, object_id), retired)
    shutil.rmtree(retired, ignore_errors=True)


def object_flags(out_dir: str, object_id: str) -> dict:
    """The quality flags an object's ``cameras.json`` records (empty when it has none)."""
    try:
        with open(os.path.join(out_dir, object_id, RECORD_FILE), encoding="utf-8") as handle:
            return dict(json.load(handle).get("quality") or {})
    except (OSError, ValueError):
        return {}


class Manifest:
    """Done and failed objects of one shard; ``save()`` writes it atomically."""

    def __init__(self, path: str, settings: dict):
        self.path = path
        self.settings = settings
        self.done: dict[str, dict] = {}
        self.failed: dict[str, dict] = {}
        self.objects_total: int | None = None

    @classmethod
    def open(cls, path: str, settings: dict) -> Manifest:
        """Loads an existing manifest (refusing one written with other render settings) or starts a new one."""
        manifest = cls(path, settings)
        if not os.path.exists(path):
            return manifest
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError) as error:
            raise ManifestError(f"cannot read manifest {path}: {error}") from None
        if data.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"{path} is not an iso3d-render manifest (format {data.get('format')!r})")
        if data.get("settings") != settings:
            changed = sorted(
                key for key in set(settings) | set(data.get("settings", {}))
                if settings.get(key) != data.get("settings", {}).get(key)
            )
            raise ManifestError(
                f"{os.path.dirname(path) or '.'} was rendered with other settings ({', '.join(changed)} differ); "
                "use the same settings to resume or a new --out folder"
            )
        manifest.done = dict(data.get("done", {}))
        manifest.failed = dict(data.get("failed", {}))
        manifest.objects_total = data.get("objects_total")
        return manifest

    def mark_done(self, object_id: str, source: str, seconds: float | None, flags: dict | None = None):
        self.failed.pop(object_id, None)
        self.done[object_id] = {"source": source, "seconds": seconds, "finished_at": round(time.time(), 3),
                                "flags": flags or {}}

    def mark_failed(self, object_id: str, source: str, reason: str):
        self.done.pop(object_id, None)
        self.failed[object_id] = {"source": source, "reason": reason, "failed_at": round(time.time(), 3)}

    def forget(self, object_id: str):
        self.done.pop(object_id, None)

    def to_dict(self) -> dict:
        return {
            "format": MANIFEST_FORMAT,
            "settings": self.settings,
            "objects_total": self.objects_total,
            "done": dict(sorted(self.done.items())),
            "failed": dict(sorted(self.failed.items())),
        }

    def save(self):
        write_json_atomically(self.path, self.to_dict())


def shard_manifest_paths(out_dir: str) -> list[str]:
    """The manifests of every shard (or the one unsharded manifest) in ``out_dir``."""
    single = os.path.join(out_dir, "manifest.json")
    paths = sorted(glob.glob(os.path.join(glob.escape(out_dir), "manifest-shard-*-of-*.json")))
    return ([single] if os.path.isfile(single) else []) + paths


def _read(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as error:
        raise ManifestError(f"cannot read manifest {path}: {error}") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{path} is not an iso3d-render manifest")
    return data


def merge(out_dir: str) -> dict:
    """One manifest from the shards' manifests in ``out_dir`` (all with the same settings), with totals.

    An object done in one shard and failed in another (a re-sharded run) counts as done."""
    paths = shard_manifest_paths(out_dir)
    if not paths:
        raise ManifestError(f"no iso3d-render manifest (manifest.json or manifest-shard-*.json) in {out_dir}")
    settings, done, failed, totals, unknown_total = None, {}, {}, 0, False
    for path in paths:
        data = _read(path)
        if settings is None:
            settings = data.get("settings")
        elif data.get("settings") != settings:
            raise ManifestError(f"{path} was rendered with other settings than {paths[0]}; they cannot be merged")
        done.update(data.get("done", {}))
        failed.update(data.get("failed", {}))
        if data.get("objects_total") is None:
            unknown_total = True
        else:
            totals += int(data["objects_total"])
    for object_id in done:
        failed.pop(object_id, None)
    flagged = sorted(k for k, entry in done.items() if is_flagged(entry.get("flags") or {}))
    seconds = [entry["seconds"] for entry in done.values() if entry.get("seconds") is not None]
    return {
        "format": MANIFEST_FORMAT,
        "settings": settings,
        "objects_total": None if unknown_total else totals,
        "shards": [os.path.basename(path) for path in paths],
        "totals": {
            "done": len(done),
            "failed": len(failed),
            "flagged": len(flagged),
            "remaining": None if unknown_total else max(0, totals - len(done) - len(failed)),
            "render_seconds": round(sum(seconds), 3),
        },
        "flagged": flagged,
        "done": dict(sorted(done.items())),
        "failed": dict(sorted(failed.items())),
    }


THROUGHPUT_WINDOW_S = 3600.0  # throughput is measured over the objects finished in the last hour


def summary(merged: dict, now: float | None = None) -> dict:
    """Counts, throughput (objects/hour over the last hour of finished objects) and ETA of a merged manifest."""
    now = time.time() if now is None else now
    times = sorted(entry["finished_at"] for entry in merged["done"].values() if entry.get("finished_at"))
    recent = [t for t in times if t >= now - THROUGHPUT_WINDOW_S]
    per_hour = None
    if len(recent) >= 2 and recent[-1] > recent[0]:
        per_hour = (len(recent) - 1) / (recent[-1] - recent[0]) * 3600.0
    remaining = merged["totals"]["remaining"]
    eta_s = remaining / per_hour * 3600.0 if per_hour and remaining is not None else None
    return {**merged["totals"], "objects_total": merged["objects_total"], "objects_per_hour": per_hour,
            "eta_seconds": eta_s, "last_finished_at": times[-1] if times else None}
