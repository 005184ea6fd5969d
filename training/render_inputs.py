"""The objects of a render run: command-line inputs expanded to (object id, source) items, and sharding.

Inputs are object files (GLB/GLTF/OBJ/FBX/PLY/STL/.blend), folders (searched recursively for those), list files
(``.txt``/``.lst``: one path or Objaverse UID a line, ``#`` comments, paths relative to the list file) and
Objaverse UIDs (32 hex digits). Object ids are file stems (made unique with a hash of the path when two files
share a stem) or the UID; the id names the object's output folder.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from blender_addon.render_plan import OBJECT_EXTENSIONS

LIST_EXTENSIONS = (".txt", ".lst")
_UID = re.compile(r"[0-9a-f]{32}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class InputError(ValueError):
    """A command-line input is unusable; the message says which and why, in one line."""


@dataclass(frozen=True)
class RenderItem:
    """One object to render: its id (output folder name) and its source (a file path or an Objaverse UID)."""

    object_id: str
    source: str
    is_objaverse_uid: bool = False


def is_objaverse_uid(text: str) -> bool:
    return bool(_UID.fullmatch(text))


def _files_in_folder(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, name) for name in sorted(files) if name.lower().endswith(OBJECT_EXTENSIONS)]
    return found


def _expand(entry: str, base: str, from_list: str | None, seen_lists: set) -> list[tuple[str, bool]]:
    where = f" (listed in {from_list})" if from_list else ""
    path = entry if os.path.isabs(entry) else os.path.join(base, entry)
    if os.path.isdir(path):
        files = _files_in_folder(path)
        if not files:
            raise InputError(f"no object files ({', '.join(OBJECT_EXTENSIONS)}) in folder {entry}{where}")
        return [(os.path.abspath(f), False) for f in files]
    if os.path.isfile(path):
        lower = path.lower()
        if lower.endswith(OBJECT_EXTENSIONS):
            return [(os.path.abspath(path), False)]
        if lower.endswith(LIST_EXTENSIONS):
            real = os.path.realpath(path)
            if real in seen_lists:
                raise InputError(f"list file {entry} includes itself")
            return _read_list(path, seen_lists | {real})
        raise InputError(
            f"unsupported input {entry}{where}: not an object file ({', '.join(OBJECT_EXTENSIONS)}), "
            f"a list file ({', '.join(LIST_EXTENSIONS)}) or a folder"
        )
    if is_objaverse_uid(entry):
        return [(entry, True)]
    raise InputError(f"no such file or folder, and not an Objaverse UID: {entry}{where}")


def _read_list(path: str, seen_lists: set) -> list[tuple[str, bool]]:
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read list file {path}: {error}") from None
    base = os.path.dirname(os.path.abspath(path))
    entries = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            entries += _expand(line, base, path, seen_lists)
    return entries


def _id_for_path(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    return _UNSAFE.sub("_", stem).strip("._") or "object"


def collect_items(inputs: list[str]) -> list[RenderItem]:
    """Expands inputs to render items sorted by id; duplicate sources are listed once."""
    if not inputs:
        raise InputError("no objects given: pass object files, folders, list files or Objaverse UIDs")
    sources: dict[str, bool] = {}
    for entry in inputs:
        for source, is_uid in _expand(entry, os.getcwd(), None, set()):
            sources.setdefault(source, is_uid)
    stems: dict[str, list[str]] = {}
    for source, is_uid in sources.items():
        stems.setdefault(source if is_uid else _id_for_path(source), []).append(source)
    items = []
    for stem, group in stems.items():
        for source in group:
            object_id = stem
            if len(group) > 1:
                object_id = f"{stem}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"
            items.append(RenderItem(object_id, source, sources[source]))
    return sorted(items, key=lambda item: item.object_id)


def shard(items: list[RenderItem], shard_index: int, num_shards: int) -> list[RenderItem]:
    """Every ``num_shards``-th item from ``shard_index`` (items sorted by id, so each machine agrees)."""
    if num_shards < 1:
        raise InputError(f"--num-shards must be at least 1 (got {num_shards})")
    if not 0 <= shard_index < num_shards:
        raise InputError(f"--shard-index must be in 0..{num_shards - 1} (got {shard_index})")
    return items[shard_index::num_shards]
