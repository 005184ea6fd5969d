#!/usr/bin/env python3
"""Builds the Blender extension zip of ``blender_addon/`` with the pyzmq wheels it needs, and validates it with
Blender's own extension validator (``blender_ext.py``, shipped inside the bpy package).

    python build_addon.py                       # dist/isotropic3d-<version>.zip with all platforms' wheels
    python build_addon.py --split-platforms     # one zip per platform, each with its wheels only
    python build_addon.py --no-wheels           # no wheels (tests; pyzmq must then come from elsewhere)
    python build_addon.py --wheels-from DIR     # wheels from a folder filled earlier by `pip download` (offline)

Wheels: pyzmq for Python 3.11 (cp311; Blender 4.2-5.0) and the stable ABI (cp312-abi3; Blender 5.1+ with Python
3.13), for linux x64 (manylinux_2_28), Windows x64 and macOS (universal2), fetched with `pip download`.
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
PYTHON_VERSIONS = ("3.11", "3.13")  # cp311 wheels; 3.13 resolves to the cp312-abi3 wheels
# pip --platform tags of the wheels (one universal2 wheel serves both macOS platforms)
PIP_PLATFORMS = ("manylinux_2_28_x86_64", "win_amd64", "macosx_10_15_universal2")
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


def download_wheels(dest: Path, wheels_from: Path | None) -> list[Path]:
    """pyzmq wheels for every (Python version, platform) into ``dest``; a one-line BuildError if pip cannot."""
    dest.mkdir(parents=True, exist_ok=True)
    for python_version in PYTHON_VERSIONS:
        for platform in PIP_PLATFORMS:
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


def manifest_text(source: str, wheels: list[str], platforms: list[str] | None) -> str:
    """The manifest with ``wheels`` (and ``platforms``) set, placed before the first table."""
    lines = [line for line in source.splitlines() if not re.match(r"\s*(wheels|platforms)\s*=", line)]
    extra = []
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
          split_platforms: bool = False, check: bool = True) -> list[Path]:
    source = (ADDON_DIR / "blender_manifest.toml").read_text()
    manifest = tomllib.loads(source)
    stem = f"{manifest['id']}-{manifest['version']}"
    with tempfile.TemporaryDirectory() as staging:
        wheels = download_wheels(Path(staging) / "wheels", wheels_from) if with_wheels else []
        if split_platforms and wheels:
            outputs = []
            for platform, pattern in PLATFORM_PATTERNS.items():
                chosen = [w for w in wheels if pattern.search(w.name)]
                text = manifest_text(source, [w.name for w in chosen], [platform])
                outputs.append(write_zip(output_dir / f"{stem}-{platform.replace('-', '_')}.zip", text, chosen))
        else:
            text = manifest_text(source, [w.name for w in wheels], None)
            outputs = [write_zip(output_dir / f"{stem}.zip", text, wheels)]
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
    args = parser.parse_args(argv)
    try:
        outputs = build(args.output_dir, not args.no_wheels, args.wheels_from, args.split_platforms,
                        not args.no_validate)
    except BuildError as error:
        print(f"build_addon: {error}", file=sys.stderr)
        return 2
    for output in outputs:
        print(f"build_addon: wrote {output} ({output.stat().st_size / 1e6:.1f} MB)" +
              ("" if args.no_validate else ", validated"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
