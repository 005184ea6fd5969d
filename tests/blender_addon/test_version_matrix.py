"""The built extension in every supported Blender: each bpy release in its own venv (scripts/bpy_venv.py builds
them on first use under .venv-bpy/, ~300 MB each, network needed), the zip made for its Python installed as
Blender installs it, then a preview and a generate against a real tiny backend, and the training-view renderer's
world, in a subprocess (tests/blender_addon/matrix_run.py).

Slow (minutes per release): run with ``-m slow``. ``ISO3D_BPY_MATRIX="4.2.0 5.2.3"`` picks the releases (CI: the
oldest and the newest); the default is the whole matrix of scripts/bpy_venv.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import zipfile
from pathlib import Path

import pytest

import build_addon
from tests.helpers.paths import REPO_ROOT
from tests.helpers.processes import python as this_python
from tests.helpers.processes import run as run_process


def _load_script(name: str):
    """A module of scripts/ (a folder of programs, not a package), loaded by path."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bpy_venv = _load_script("bpy_venv")

RELEASES = os.environ.get("ISO3D_BPY_MATRIX", " ".join(bpy_venv.MATRIX)).split()
EXAMPLE = REPO_ROOT / "examples" / "example.png"
RUNNER = Path(__file__).with_name("matrix_run.py")

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.blender]


@pytest.fixture(scope="module")
def backend(backend_processes):
    process = backend_processes()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def zips(tmp_path_factory):
    """Python version -> the linux-x64 zip for the Blenders of that Python (real pyzmq wheels, downloaded)."""
    folder = tmp_path_factory.mktemp("dist")
    result = run_process(this_python(REPO_ROOT / "build_addon.py", "--platform", "linux-x64", "--output-dir", folder),
                         timeout=600)
    assert result.returncode == 0, result.stderr
    return {python: next(folder.glob(f"isotropic3d-*-{suffix}.zip"))
            for python, (suffix, _, _) in build_addon.PYTHON_BUILDS.items()}


def run(python: Path, *args: str, user: Path | None = None, timeout: float = 600) -> dict:
    environment = dict(os.environ, PYTHONPATH="")
    if user is not None:
        environment["BLENDER_USER_RESOURCES"] = str(user)
    result = run_process([python, RUNNER, *args], env=environment, timeout=timeout, cwd=REPO_ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("MATRIX ")]
    assert result.returncode == 0 and lines, (result.stdout + result.stderr)[-4000:]
    return json.loads(lines[-1][len("MATRIX "):])


@pytest.mark.parametrize("release", RELEASES)
def test_the_zip_for_its_python_installs_previews_and_generates(release, backend, zips, tmp_path):
    python = bpy_venv.ensure_venv(release)
    zip_path = zips[bpy_venv.python_version_of(release)]
    wheels = [name for name in zipfile.ZipFile(zip_path).namelist() if name.startswith("wheels/")]
    tag = "cp311-cp311" if bpy_venv.python_version_of(release) == "3.11" else "cp312-abi3"
    assert wheels and all(tag in name for name in wheels)  # only the wheel that loads in this Python
    outcome = run(python, str(zip_path), backend.address, str(EXAMPLE), str(tmp_path), user=tmp_path / "user")
    assert outcome["install"] == ["FINISHED"] and str(tmp_path / "user") in outcome["package"]
    assert str(tmp_path / "user") in outcome["zmq"]  # pyzmq from the zip's wheel, not from anywhere else
    assert outcome["preview"] == "done" and outcome["preview_images"] == 4
    assert outcome["generate"] == "done" and outcome["faces"] > 0, outcome["error"]
    assert outcome["world_nodes"] > 0  # the renderer's world has its nodes on every release (4.2: use_nodes)


def test_a_wheel_for_another_python_is_reported_in_words(zips, tmp_path):
    """Blender 4.2 (Python 3.11) given pyzmq's cp312-abi3 wheel: the import fails; the panel says why."""
    oldest = min(RELEASES, key=lambda release: tuple(int(part) for part in release.split(".")))
    if bpy_venv.python_version_of(oldest) != "3.11":
        pytest.skip("needs a Python 3.11 release in the matrix")
    abi3 = next(name for name in zipfile.ZipFile(zips["3.13"]).namelist() if "abi3" in name)
    wheel = tmp_path / "abi3"
    with zipfile.ZipFile(zips["3.13"]) as archive:
        archive.extract(abi3, tmp_path)
    with zipfile.ZipFile(tmp_path / abi3) as archive:
        archive.extractall(wheel)
    outcome = run(bpy_venv.ensure_venv(oldest), "--broken-wheel", str(wheel), str(REPO_ROOT), str(EXAMPLE))
    assert "does not load in this Blender's Python 3.11" in outcome["problem"]
    assert "py311.zip" in outcome["problem"]
    assert outcome["reported"] and "Traceback" not in outcome["reported"]
    assert "does not load" in outcome["last_error"]
