"""The objects of a render run: command-line inputs expanded to (object id, source) items, and sharding.

Inputs are object files (GLB/GLTF/OBJ/FBX/PLY/STL/.blend), folders (searched recursively for those), list files
(``.txt``/``.lst``: one path or Objaverse UID a line, ``#`` comments, paths relative to the list file) and
Objaverse UIDs (32 hex digits).

An object's id names its output folder and is its identity: for a file, ``<stem>-<16 hex digits>``, the digits
from a SHA-256 of the file's bytes and of the render settings that change pixels, so a file of the same name with
other content (or the same file under other settings) is another object, and the same content listed twice is
rendered once. For an Objaverse UID the id is the UID (Objaverse's own content identity; the output folder's
manifest pins the settings). Sharding splits the sources sorted by path (or UID) before any file is read, so each
machine hashes only its own shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass

from blender_addon.core.render_plan import OBJECT_EXTENSIONS

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


ID_HASH_DIGITS = 16  # 64 bits: a collision among 10^6 objects has a chance of about 3e-8


@dataclass(frozen=True)
class Source:
    """An input before it is read: a file path or an Objaverse UID."""

    source: str
    is_objaverse_uid: bool = False


def settings_key(settings: dict) -> str:
    """The text of the settings that take part in object ids (sorted JSON)."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


def file_digest(path: str) -> str:
    """SHA-256 (hex) of a file's bytes; raises InputError if unreadable."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise InputError(f"cannot read object file {path}: {error.strerror}") from None
    return digest.hexdigest()


def content_id(path: str, key: str, digest: str | None = None) -> str:
    """``<safe file stem>-<hash of the file's SHA-256 and the settings key>``; raises InputError if unreadable."""
    digest = digest or file_digest(path)
    combined = hashlib.sha256(f"{digest}\0settings\0{key}".encode()).hexdigest()
    stem = _UNSAFE.sub("_", os.path.splitext(os.path.basename(path))[0]).strip("._") or "object"
    return f"{stem}-{combined[:ID_HASH_DIGITS]}"


class DigestCache:
    """File digests remembered by (path, size, modification time in ns), so a resumed run over many large files
    does not read them all again; a file changed in any of those is hashed anew. Kept as JSON at ``path``."""

    def __init__(self, path: str | None):
        self.path, self.entries, self.changed = path, {}, False
        if path and os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    self.entries = dict(json.load(handle))
            except (OSError, ValueError, TypeError):
                self.entries = {}  # a damaged cache only costs the hashing again

    def digest(self, path: str) -> str:
        try:
            stat = os.stat(path)
        except OSError as error:
            raise InputError(f"cannot read object file {path}: {error.strerror}") from None
        key = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}"
        if key not in self.entries:
            self.entries[key] = file_digest(path)
            self.changed = True
        return self.entries[key]

    def save(self):
        if self.path and self.changed:
            from blender_addon.core.atomic_files import write_json_atomically

            write_json_atomically(self.path, self.entries, indent=None)
            self.changed = False


def collect_sources(inputs: list[str]) -> list[Source]:
    """Expands inputs to sources sorted by path or UID, each listed once."""
    if not inputs:
        raise InputError("no objects given: pass object files, folders, list files or Objaverse UIDs")
    sources: dict[str, bool] = {}
    for entry in inputs:
        for source, is_uid in _expand(entry, os.getcwd(), None, set()):
            sources.setdefault(source, is_uid)
    return [Source(source, is_uid) for source, is_uid in sorted(sources.items())]


def identify(sources: list[Source], key: str, digest_cache: str | None = None) -> list[RenderItem]:
    """Render items (ids by content, see the module) sorted by id; sources with the same content once.
    ``digest_cache``: a JSON file remembering file digests between runs (``DigestCache``)."""
    cache = DigestCache(digest_cache)
    items: dict[str, RenderItem] = {}
    try:
        for source in sources:
            if source.is_objaverse_uid:
                object_id = source.source
            else:
                object_id = content_id(source.source, key, cache.digest(source.source))
            items.setdefault(object_id, RenderItem(object_id, source.source, source.is_objaverse_uid))
    finally:
        cache.save()
    return sorted(items.values(), key=lambda item: item.object_id)


def shard(sources: list, shard_index: int, num_shards: int) -> list:
    """Every ``num_shards``-th entry from ``shard_index`` (entries in a fixed order, so each machine agrees)."""
    if num_shards < 1:
        raise InputError(f"--num-shards must be at least 1 (got {num_shards})")
    if not 0 <= shard_index < num_shards:
        raise InputError(f"--shard-index must be in 0..{num_shards - 1} (got {shard_index})")
    return sources[shard_index::num_shards]
