"""backend.compile_cache: which folders it points torch's caches and extension builds at (in this process; the
cross-process cache hit is tests/test_compile_cache.py)."""

from __future__ import annotations

import os

import pytest

from backend.compile_cache import use_compile_cache

FOLDER_VARIABLES = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TORCH_EXTENSIONS_DIR")


@pytest.fixture
def clean_environment(monkeypatch, tmp_path):
    """No cache folder set (each restored after the test), the iso3d folder under tmp_path."""
    for name in FOLDER_VARIABLES:
        monkeypatch.setenv(name, "")  # recorded as it was (set or not), so what use_compile_cache sets is undone
        monkeypatch.delenv(name)
    monkeypatch.setenv("ISO3D_COMPILE_CACHE", str(tmp_path / "compile"))
    return tmp_path / "compile"


def test_extension_builds_such_as_nerfacc_land_in_the_iso3d_folder(clean_environment):
    from torch.utils.cpp_extension import _get_build_directory

    folder = use_compile_cache()
    assert folder == clean_environment and folder.is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(folder / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == str(folder / "triton")
    # torch's own resolver of an extension's build folder (what nerfacc's JIT build calls) answers inside it
    build = _get_build_directory("nerfacc_cuda", verbose=False)
    assert os.path.commonpath([build, str(folder)]) == str(folder) and os.path.isdir(build)


def test_folders_the_user_chose_are_kept(clean_environment, monkeypatch, tmp_path):
    chosen = {name: str(tmp_path / name.lower()) for name in FOLDER_VARIABLES}
    for name, value in chosen.items():
        monkeypatch.setenv(name, value)
    use_compile_cache()
    assert {name: os.environ[name] for name in FOLDER_VARIABLES} == chosen
