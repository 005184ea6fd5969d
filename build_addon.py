#!/usr/bin/env python3
"""Builds the Blender extension zips of ``blender_addon/`` with the pyzmq wheels they need, and validates them with
Blender's own extension validator (``blender_ext.py``, shipped inside the bpy package).

    python build_addon.py                       # dist/isotropic3d-<version>-py311.zip and ...-py313.zip
    python build_addon.py --split-platforms     # one zip per Blender Python and platform, each with its wheels
    python build_addon.py --python 3.11         # only the zip for Blender 4.2-5.0
    python build_addon.py --platform linux-x64  # only that platform's wheels (repeatable)
    python build_addon.py --no-wheels           # no wheels (tests; pyzmq must then come from elsewhere)
    python build_addon.py --wheels-from DIR     # wheels from a folder filled earlier by `pip download` (offline)

One zip per Blender Python, because Blender 4.2 picks a bundled wheel by its platform tag only and, of two of the
same version, installs the lexically larger name: given pyzmq's cp311 and cp312-abi3 wheels it installs the abi3
one, which does not load on its Python 3.11. So the ``py311`` zip (Blender 4.2 up to, not including, 5.1) carries
only cp311 wheels, and the ``py313`` zip (Blender 5.1+, Python 3.13) only the stable-ABI (cp312-abi3) ones; the
manifests' ``blender_version_min``/``blender_version_max`` keep each zip to the Blenders it loads in. Wheels for
linux x64 (manylinux_2_28), Windows x64 and macOS (universal2), fetched with `pip download`.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent
ADDON_DIR = REPO_ROOT / "blender_addon"
PYZMQ = "pyzmq==27.3.0"
# Blender Python -> (zip suffix, blender_version_min, blender_version_max (the first version NOT supported)).
# Blender 4.2-5.0 run Python 3.11 (cp311 wheels); 5.1+ run Python 3.13 (pip resolves the cp312-abi3 wheels).
PYTHON_BUILDS = {
    "3.11": ("py311", "4.2.0", "5.1.0"),
    "3.13": ("py313", "5.1.0", None),
}
# Blender platform -> pip --platform tag of its wheels (one universal2 wheel serves both macOS platforms)
PIP_PLATFORMS = {
    "linux-x64": "manylinux_2_28_x86_64",
    "windows-x64": "win_amd64",
    "macos-arm64": "macosx_10_15_universal2",
    "macos-x64": "macosx_10_15_universal2",
}
# Which wheel file names belong to a Blender platform (universal2 serves both macOS platforms).
PLATFORM_PATTERNS = {
    "linux-x64": re.compile(r"manylinux.*x86_64"),
    "windows-x64": re.compile(r"win_amd64"),
    "macos-arm64": re.compile(r"macosx_.*universal2"),
    "macos-x64": re.compile(r"macosx_.*universal2"),
}
EXCLUDED = re.compile(r"(__pycache__|\.pyc$|\.pyo$|~$|\.orig$)")


class BuildError(Exception):
    pass


def download_wheels(dest: Path, wheels_from: Path | None, python_version: str, platforms: list[str]) -> list[Path]:
    """pyzmq wheels for one Python version and ``platforms`` (Blender names) into ``dest``; a one-line BuildError
    if pip cannot."""
    dest.mkdir(parents=True, exist_ok=True)
    for platform in sorted({PIP_PLATFORMS[name] for name in platforms}):
        command = [sys.executable, "-m", "pip", "download", PYZMQ, "--dest", str(dest), "--only-binary=:all:",
                   "--no-deps", "--implementation", "cp", "--python-version", python_version,
                   "--platform", platform, "--quiet", "--disable-pip-version-check"]
        if wheels_from is not None:
            command += ["--no-index", "--find-links", str(wheels_from)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
            reason = lines[-1].strip() if lines else f"pip exited with {result.returncode}"
            raise BuildError(f"could not download {PYZMQ} for Python {python_version} on {platform} "
                             f"(offline? use --wheels-from DIR or --no-wheels): {reason}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise BuildError(f"pip downloaded no wheels into {dest}")
    return wheels


def manifest_text(source: str, wheels: list[str], platforms: list[str] | None, version_min: str = "",
                  version_max: str | None = None) -> str:
    """The manifest with ``wheels`` (and ``platforms``, the Blender version range when given) set, placed before
    the first table."""
    managed = "wheels|platforms" + ("|blender_version_min|blender_version_max" if version_min else "")
    lines = [line for line in source.splitlines() if not re.match(rf"\s*({managed})\s*=", line)]
    extra = []
    if version_min:
        extra.append(f'blender_version_min = "{version_min}"')
        if version_max:
            extra.append(f'blender_version_max = "{version_max}"')
    if platforms:
        extra.append("platforms = [" + ", ".join(f'"{p}"' for p in platforms) + "]")
    if wheels:
        extra.append("wheels = [\n" + "".join(f'  "./wheels/{name}",\n' for name in wheels) + "]")
    first_table = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    lines[first_table:first_table] = [*extra, ""] if extra else []
    return "\n".join(lines) + "\n"


def write_zip(path: Path, manifest: str, wheels: list[Path]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(ADDON_DIR.rglob("*")):
            relative = file.relative_to(ADDON_DIR).as_posix()
            if file.is_file() and not EXCLUDED.search(relative) and relative != "blender_manifest.toml":
                archive.write(file, relative)
        archive.writestr("blender_manifest.toml", manifest)
        for wheel in wheels:
            archive.write(wheel, f"wheels/{wheel.name}")
    return path


def find_validator() -> Path:
    """Blender's ``blender_ext.py`` inside the installed bpy package (found without importing bpy)."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("bpy is not installed, so Blender's validator is missing (pip install bpy, or --no-validate)")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        if found:
            return found[-1]
    raise BuildError("blender_ext.py was not found in the installed bpy package")


def validate(zip_path: Path) -> None:
    result = subprocess.run([sys.executable, str(find_validator()), "validate", str(zip_path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"Blender's validator refused {zip_path.name}: {(result.stdout + result.stderr).strip()}")


def build(output_dir: Path, with_wheels: bool = True, wheels_from: Path | None = None,
          split_platforms: bool = False, check: bool = True, pythons: list[str] | None = None,
          platforms: list[str] | None = None) -> list[Path]:
    """The zips (one per Blender Python in ``pythons``, and per platform with ``split_platforms``)."""
    source = (ADDON_DIR / "blender_manifest.toml").read_text()
    manifest = tomllib.loads(source)
    platforms = list(platforms or PIP_PLATFORMS)
    for name in [*(pythons or []), *platforms]:
        if name not in PYTHON_BUILDS and name not in PIP_PLATFORMS:
            raise BuildError(f"unknown Python or platform {name!r} (Pythons: {', '.join(PYTHON_BUILDS)}; "
                             f"platforms: {', '.join(PIP_PLATFORMS)})")
    outputs = []
    for python_version in pythons or PYTHON_BUILDS:
        suffix, version_min, version_max = PYTHON_BUILDS[python_version]
        stem = f"{manifest['id']}-{manifest['version']}-{suffix}"
        with tempfile.TemporaryDirectory() as staging:
            wheels = (download_wheels(Path(staging) / "wheels", wheels_from, python_version, platforms)
                      if with_wheels else [])
            if split_platforms and wheels:
                for platform in platforms:
                    chosen = [w for w in wheels if PLATFORM_PATTERNS[platform].search(w.name)]
                    text = manifest_text(source, [w.name for w in chosen], [platform], version_min, version_max)
                    outputs.append(write_zip(output_dir / f"{stem}-{platform.replace('-', '_')}.zip", text, chosen))
            else:
                text = manifest_text(source, [w.name for w in wheels], platforms if len(platforms) < len(PIP_PLATFORMS)
                                     and wheels else None, version_min, version_max)
                outputs.append(write_zip(output_dir / f"{stem}.zip", text, wheels))
    if check:
        for output in outputs:
            validate(output)
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "dist", help="where the zip(s) go (./dist)")
    parser.add_argument("--no-wheels", action="store_true", help="build without the pyzmq wheels")
    parser.add_argument("--wheels-from", type=Path, metavar="DIR", help="take the wheels from DIR (no network)")
    parser.add_argument("--split-platforms", action="store_true", help="one zip per platform with its wheels")
    parser.add_argument("--no-validate", action="store_true", help="skip Blender's validator")
    parser.add_argument("--python", action="append", choices=list(PYTHON_BUILDS),
                        help="only the zip for the Blenders with this Python (repeatable; default: all)")
    parser.add_argument("--platform", action="append", choices=list(PIP_PLATFORMS),
                        help="only this platform's wheels (repeatable; default: all)")
    args = parser.parse_args(argv)
    try:
        outputs = build(args.output_dir, not args.no_wheels, args.wheels_from, args.split_platforms,
                        not args.no_validate, args.python, args.platform)
    except BuildError as error:
        print(f"build_addon: {error}", file=sys.stderr)
        return 2
    for output in outputs:
        print(f"build_addon: wrote {output} ({output.stat().st_size / 1e6:.1f} MB)" +
              ("" if args.no_validate else ", validated"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
