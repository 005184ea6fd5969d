"""The dataset manifest of a render run: which objects are done and which failed, with the reason.

One JSON file per shard in the output folder (``manifest.json``, or ``manifest-shard-I-of-N.json`` when
sharded, so machines sharing a folder never write the same file), rewritten atomically after every object. A
finished object's folder (published by one rename) is the ground truth: folders found on resume count as done
even when a kill came between the rename and the manifest update.
"""

from __future__ import annotations

import json
import os

from blender_addon.atomic_files import write_json_atomically
from blender_addon.render_plan import RECORD_FILE

MANIFEST_FORMAT = "isotropic3d-render-manifest/1"


class ManifestError(ValueError):
    """The output folder's manifest does not fit this run; the message says why."""


def manifest_path(out_dir: str, shard_index: int, num_shards: int) -> str:
    if num_shards == 1:
        return os.path.join(out_dir, "manifest.json")
    return os.path.join(out_dir, f"manifest-shard-{shard_index:05d}-of-{num_shards:05d}.json")


def object_folder_finished(out_dir: str, object_id: str) -> bool:
    return os.path.isfile(os.path.join(out_dir, object_id, RECORD_FILE))


class Manifest:
    """Done and failed objects of one shard; ``save()`` writes it atomically."""

    def __init__(self, path: str, settings: dict):
        self.path = path
        self.settings = settings
        self.done: dict[str, dict] = {}
        self.failed: dict[str, dict] = {}

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
        return manifest

    def mark_done(self, object_id: str, source: str, seconds: float | None):
        self.failed.pop(object_id, None)
        self.done[object_id] = {"source": source, "seconds": seconds}

    def mark_failed(self, object_id: str, source: str, reason: str):
        self.done.pop(object_id, None)
        self.failed[object_id] = {"source": source, "reason": reason}

    def save(self):
        data = {
            "format": MANIFEST_FORMAT,
            "settings": self.settings,
            "done": dict(sorted(self.done.items())),
            "failed": dict(sorted(self.failed.items())),
        }
        write_json_atomically(self.path, data)
