"""Files written whole or not at all: the one atomic-write helper of the project (standard library only).

The add-on, the backend and training all write through it. A file is first written under a temporary name in its
own folder (``NAME.<pid>.<random>.partial``, so the rename stays on one file system and two writers never share a
temporary), flushed to disk, then renamed over the target with one ``os.replace``: a reader sees the old file or
the new one, never a part of one. If writing fails the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

PARTIAL_SUFFIX = ".partial"  # every temporary file ends with it; a folder scan can skip such names


def temporary_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path`` (same folder), unique to this process and call."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}")


def _flush_to_disk(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """For a writer that wants a file name (safetensors, ...): yields a temporary path beside ``path``; when the
    block ends without an error the file written there replaces ``path``, otherwise it is removed.

    The parent folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        yield temporary
        _flush_to_disk(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def open_atomically(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """For a writer that takes an open file (``torch.save``, ``numpy.savez``, PIL's ``save`` with a format,
    ``json.dump``): yields the temporary file, opened with ``mode`` (``"wb"`` or ``"w"``); it replaces ``path``
    when the block ends without an error."""
    if mode not in ("wb", "w"):
        raise ValueError(f"open_atomically writes a new file: mode 'wb' or 'w', not {mode!r}")
    with atomic_path(path) as temporary:
        with open(temporary, mode, encoding=encoding if mode == "w" else None) as handle:
            yield handle


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> Path:
    """``path`` holds ``data`` afterwards, or (on an error) what it held before."""
    with open_atomically(path) as handle:
        handle.write(data)
    return Path(path)


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """``path`` holds ``text`` (UTF-8) afterwards, or (on an error) what it held before."""
    return write_bytes_atomically(path, text.encode("utf-8"))


def write_json_atomically(path: str | os.PathLike, data: Any, indent: int | None = 1) -> Path:
    """``path`` holds ``data`` as JSON (UTF-8) afterwards; data that JSON cannot hold raises before any write."""
    return write_text_atomically(path, json.dumps(data, indent=indent))


def write_problem(path: str | os.PathLike, folder: bool = False) -> str | None:
    """Why ``path`` (a file, or with ``folder`` a folder to write into) cannot be written, in words, or None where
    it can: its missing folders are made and a probe file written there, then all of it removed again (the writer
    makes the folders when it writes), so a check that passes leaves nothing behind. For a command or an operator to
    ask before its work rather than fail after it."""
    path = Path(path).expanduser()
    if folder and path.exists() and not path.is_dir():
        return "exists and is not a folder"
    if not folder and path.is_dir():
        return "is a folder; give a file name"
    target = path if folder else path.parent
    missing = [p for p in (target, *target.parents) if not p.exists()]  # the deepest first
    made: list[Path] = []
    try:
        for directory in reversed(missing):
            directory.mkdir()
            made.append(directory)
        probe = temporary_path(target / ".write-check")
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as error:
        return f"cannot be written there ({error.strerror or error})"
    finally:
        for directory in reversed(made):
            try:
                directory.rmdir()
            except OSError:  # something else wrote there meanwhile: it stays
                pass
    return None


def copy_file_atomically(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path`` becomes a copy of ``source`` (a finished file handed out under another name, e.g. a job's mesh as
    the user's ``--out``), or (on an error, an interrupted copy) stays what it was."""
    with atomic_path(path) as temporary:
        shutil.copyfile(source, temporary)
    return Path(path)


def write_files_atomically(files: dict[str, bytes], folder: str | os.PathLike) -> list[Path]:
    """Several files of one result (``{name: bytes}`` into ``folder``): all are written under temporary names first,
    then renamed into place, so a failure while writing leaves every earlier file of the folder intact."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[tuple[Path, Path]] = []
    try:
        for name, data in files.items():
            target = folder / name
            temporary = temporary_path(target)
            written.append((temporary, target))
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
    except BaseException:
        for temporary, _ in written:
            temporary.unlink(missing_ok=True)
        raise
    for temporary, target in written:
        os.replace(temporary, target)
    return [target for _, target in written]
