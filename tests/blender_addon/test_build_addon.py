"""build_addon.py: the extension zip validates with Blender's own validator, installs into a fresh bpy user folder
and enables; without network (or wheels) the build fails with one line."""

from __future__ import annotations

import importlib.util
import os
import textwrap
import tomllib
import zipfile

import pytest

from tests.helpers.paths import REPO_ROOT
from tests.helpers.processes import python, run

# Blender runs in child processes only (the validator, the install): this process never imports bpy.
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="bpy is not installed")]

INSTALL_AND_ENABLE = textwrap.dedent("""
    import sys, bpy
    result = bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default",
                                                      enable_on_install=True)
    module = "bl_ext.user_default.isotropic3d"
    preferences = bpy.context.preferences.addons[module].preferences
    import importlib
    package = importlib.import_module(module)
    print("RESULT", result == {"FINISHED"}, hasattr(bpy.types, "ISO3D_PT_generate"),
          hasattr(bpy.types, "ISO3D_OT_generate"), preferences.backend_address, package.__file__)
""")


def build(*args: str):
    return run(python(REPO_ROOT / "build_addon.py", *args), cwd=REPO_ROOT, timeout=600)


def install_in_fresh_user_folder(zip_path, user_folder) -> str:
    environment = dict(os.environ, BLENDER_USER_RESOURCES=str(user_folder))
    result = run(python("-c", INSTALL_AND_ENABLE, zip_path), env=environment, timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT")]
    assert result.returncode == 0 and lines, result.stdout + result.stderr
    return lines[-1]


def test_zip_without_wheels_validates_installs_and_enables(tmp_path):
    result = build("--no-wheels", "--output-dir", str(tmp_path / "dist"))
    assert result.returncode == 0, result.stderr
    assert "validated" in result.stdout
    zips = sorted((tmp_path / "dist").glob("isotropic3d-*.zip"))
    assert [path.name.rsplit("-", 1)[1] for path in zips] == ["py311.zip", "py313.zip"]  # one per Blender Python
    manifests = {path.name[-9:-4]: tomllib.loads(zipfile.ZipFile(path).read("blender_manifest.toml").decode())
                 for path in zips}
    assert (manifests["py311"]["blender_version_min"], manifests["py311"]["blender_version_max"]) == ("4.2.0", "5.1.0")
    assert manifests["py313"]["blender_version_min"] == "5.1.0" and "blender_version_max" not in manifests["py313"]
    assert all(m["license"] == ["SPDX:GPL-3.0-or-later"] for m in manifests.values())  # extensions.blender.org
    zip_path = zips[0]
    names = zipfile.ZipFile(zip_path).namelist()
    assert {"blender_manifest.toml", "__init__.py", "session.py", "core/__init__.py", "core/protocol.py"} <= set(names)
    assert zipfile.ZipFile(zip_path).read("LICENSE").startswith(b"                    GNU GENERAL PUBLIC LICENSE")
    assert not any("__pycache__" in name or name.startswith("wheels/") for name in names)
    line = install_in_fresh_user_folder(zip_path, tmp_path / "user")
    assert line.startswith("RESULT True True True tcp://127.0.0.1:5555 "), line
    assert str(tmp_path / "user") in line  # installed into the fresh user folder, not imported from the checkout


def test_build_without_reachable_wheels_fails_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    result = build("--wheels-from", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "dist"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "could not download pyzmq" in result.stderr
    assert not (tmp_path / "dist").exists()


# slow: needs the network (pip downloads six wheels); the default run keeps the build without wheels
@pytest.mark.slow
def test_zips_with_downloaded_wheels_per_python_and_platform(tmp_path):
    """Needs network: pip downloads the six pyzmq wheels. Each zip carries only the wheel its Blender's Python
    loads (Blender 4.2 would install the cp312-abi3 one of a pair, which does not load on Python 3.11)."""
    result = build("--split-platforms", "--output-dir", str(tmp_path / "dist"))
    assert result.returncode == 0, result.stderr
    zips = {path.name: zipfile.ZipFile(path).namelist() for path in (tmp_path / "dist").glob("*.zip")}
    assert len(zips) == 8
    linux = {name: names for name, names in zips.items() if "linux_x64" in name}
    wheels = {name.split("-py")[1][:3]: sorted(n for n in names if n.startswith("wheels/")) for name, names in linux.items()}
    assert wheels == {
        "311": ["wheels/pyzmq-27.3.0-cp311-cp311-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl"],
        "313": ["wheels/pyzmq-27.3.0-cp312-abi3-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl"],
    }
    line = install_in_fresh_user_folder(tmp_path / "dist" / next(n for n in linux if "py311" in n), tmp_path / "user")
    assert line.startswith("RESULT True True True"), line
