#!/usr/bin/env python3
"""Builds (once) a virtual environment with one bpy release for the add-on's version matrix, and prints its Python.

    python scripts/bpy_venv.py 4.2.0       # -> .venv-bpy/4.2.0/bin/python (created on first use, then reused)
    python scripts/bpy_venv.py --list      # the releases of the matrix, oldest first

Each bpy release ships for exactly one Python (4.2-5.0: 3.11, 5.1+: 3.13), so each venv is made with that Python
(``python3.X`` on PATH, or pyenv's). The venvs live under ``.venv-bpy/<version>`` (ignored by git; CI caches the
folder). A venv is taken as built only when its marker file exists (written last), so an interrupted build is
redone, never half used. Only bpy goes in: the add-on brings pyzmq as the wheels inside its own zip.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("ISO3D_BPY_VENVS", REPO_ROOT / ".venv-bpy"))
# The matrix: the oldest supported release (4.2 LTS), the LTS in between, the one the suite uses, the newest 5.2.
MATRIX = ("4.2.0", "4.5.15", "5.0.1", "5.2.3")
MARKER = "iso3d-bpy-ready"


class VenvError(Exception):
    pass


def python_version_of(bpy_version: str) -> str:
    """The one Python a bpy release is built for."""
    major, minor = (int(part) for part in bpy_version.split(".")[:2])
    return "3.13" if (major, minor) >= (5, 1) else "3.11"


def find_python(version: str) -> str:
    """An interpreter of ``version`` (e.g. "3.11"): python3.11 on PATH, else a pyenv install of it."""
    candidates = []
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted((pyenv_root / "versions").glob(f"{version}.*/bin/python{version}"), reverse=True)
    found = shutil.which(f"python{version}")
    if found:
        candidates.insert(0, Path(found))
    for candidate in candidates:
        result = subprocess.run([str(candidate), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip() == version:
            return str(candidate)
    raise VenvError(f"no Python {version} found (install python{version}; bpy needs exactly that version)")


def venv_python(bpy_version: str) -> Path:
    return CACHE / bpy_version / "bin" / "python"


def ensure_venv(bpy_version: str, quiet: bool = True) -> Path:
    """The Python of ``.venv-bpy/<bpy_version>``, built first when missing or unfinished."""
    folder = CACHE / bpy_version
    if (folder / MARKER).is_file():
        return venv_python(bpy_version)
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted build
    python = find_python(python_version_of(bpy_version))
    steps = [[python, "-m", "venv", str(folder)],
             [str(venv_python(bpy_version)), "-m", "pip", "install", "--disable-pip-version-check",
              *(["--quiet"] if quiet else []), f"bpy=={bpy_version}"]]
    environment = dict(os.environ, PIP_CONSTRAINT="")  # the host's constraints pin the suite's bpy (5.0.1)
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, env=environment)
        if result.returncode != 0:
            lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
            raise VenvError(f"building the bpy {bpy_version} venv failed at `{' '.join(step[:4])}`: "
                            f"{lines[-1].strip() if lines else result.returncode}")
    (folder / MARKER).write_text(bpy_version + "\n")
    return venv_python(bpy_version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", nargs="?", help="a bpy release, e.g. 4.2.0")
    parser.add_argument("--list", action="store_true", help="print the matrix's releases")
    args = parser.parse_args(argv)
    if args.list or not args.version:
        print(" ".join(MATRIX))
        return 0
    try:
        print(ensure_venv(args.version, quiet=False))
    except VenvError as error:
        print(f"bpy_venv: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
