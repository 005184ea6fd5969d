"""The one atomic-write helper: a target holds the old content or the new one, never a part, and no temporary
file is left behind."""

import ast
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from blender_addon.core import atomic_files
from blender_addon.core.atomic_files import (
    PARTIAL_SUFFIX,
    atomic_path,
    copy_file_atomically,
    open_atomically,
    temporary_path,
    write_bytes_atomically,
    write_files_atomically,
    write_json_atomically,
    write_text_atomically,
)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(PARTIAL_SUFFIX))


def test_imports_only_the_standard_library():
    """The add-on, the backend and training all import it: it must load in Blender without torch and anywhere
    without bpy."""
    tree = ast.parse(Path(atomic_files.__file__).read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert modules - {"__future__"} <= set(sys.stdlib_module_names), modules


def test_writes_create_folders_and_replace_the_target(tmp_path):
    target = tmp_path / "a" / "b" / "file.json"
    write_json_atomically(target, {"x": 1})
    assert json.loads(target.read_text()) == {"x": 1}
    write_text_atomically(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert write_bytes_atomically(target, b"\x00\x01") == target
    assert target.read_bytes() == b"\x00\x01"
    assert leftovers(target.parent) == []


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "state.npz"
    write_bytes_atomically(target, b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with open_atomically(target) as handle:
            handle.write(b"half of the new")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_json_that_cannot_be_written_raises_before_any_write(tmp_path):
    target = tmp_path / "record.json"
    write_json_atomically(target, {"ok": True})
    with pytest.raises(TypeError):
        write_json_atomically(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": True}
    assert leftovers(tmp_path) == []


def test_writers_that_take_a_handle_or_a_name(tmp_path):
    """numpy.savez given a file name appends .npz; given the handle it writes exactly the target."""
    target = tmp_path / "mesh.npz"
    with open_atomically(target) as handle:
        np.savez(handle, faces=np.arange(6).reshape(2, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.npz"]
    assert np.load(target)["faces"].tolist() == [[0, 1, 2], [3, 4, 5]]
    with atomic_path(tmp_path / "named.bin") as temporary:
        assert temporary.parent == tmp_path and temporary.name.endswith(PARTIAL_SUFFIX)
        temporary.write_bytes(b"named")
    assert (tmp_path / "named.bin").read_bytes() == b"named"
    with pytest.raises(ValueError, match="mode"):
        with open_atomically(tmp_path / "x", mode="ab"):
            pass


def test_a_copy_is_whole_or_the_target_stays_as_it_was(tmp_path):
    source = tmp_path / "job" / "mesh.glb"
    source.parent.mkdir()
    source.write_bytes(b"finished mesh" * 1000)
    target = tmp_path / "out" / "chair.glb"
    assert copy_file_atomically(source, target) == target
    assert target.read_bytes() == source.read_bytes()
    write_bytes_atomically(target, b"the previous run's mesh")
    with pytest.raises(FileNotFoundError):
        copy_file_atomically(tmp_path / "job" / "missing.glb", target)
    with pytest.raises(IsADirectoryError):  # fails after the temporary file is made: nothing of it is left
        copy_file_atomically(source.parent, target)
    assert target.read_bytes() == b"the previous run's mesh"
    assert leftovers(target.parent) == []


def test_temporary_names_are_unique_and_beside_the_target(tmp_path):
    names = {temporary_path(tmp_path / "job.json") for _ in range(100)}
    assert len(names) == 100
    assert all(name.parent == tmp_path and name.name.startswith("job.json.") for name in names)


def test_several_files_are_all_written_or_the_folder_is_untouched(tmp_path):
    write_files_atomically({"chair.glb": b"old glb", "chair.png": b"old png"}, tmp_path)
    with pytest.raises(TypeError):
        write_files_atomically({"chair.glb": b"new glb", "chair.png": "not bytes"}, tmp_path)
    assert (tmp_path / "chair.glb").read_bytes() == b"old glb"
    assert (tmp_path / "chair.png").read_bytes() == b"old png"
    assert leftovers(tmp_path) == []
    written = write_files_atomically({"chair.glb": b"new glb", "chair.png": b"new png"}, tmp_path / "out")
    assert [p.read_bytes() for p in written] == [b"new glb", b"new png"]


def test_a_reader_never_sees_a_partial_file(tmp_path):
    """A writer replaces a 1 MB file 40 times while a reader keeps reading it: every read is one whole version."""
    target = tmp_path / "views.png"
    versions = [bytes([i]) * 1_000_000 for i in range(40)]
    write_bytes_atomically(target, versions[0])
    seen, done = [], threading.Event()

    def read_until_done():
        while not done.is_set():
            seen.append(target.read_bytes())

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        for version in versions[1:]:
            write_bytes_atomically(target, version)
    finally:
        done.set()
        reader.join()
    assert seen and all(data in versions for data in seen)
