"""``iso3d-render`` run from a test as a user runs it (tests/training/test_render_cli.py, test_render_workers.py):
the command line, the small render settings both files use, and the manifest's ids by file stem."""

from __future__ import annotations

import sys
from pathlib import Path

from blender_addon.core.render_plan import RenderSettings
from tests.helpers.processes import run

SMALL = ["--resolution", "48", "--samples", "4", "--no-denoise", "--fixed-views", "4", "--random-views", "2"]
SMALL_SETTINGS = RenderSettings(resolution=48, samples=4, denoise=False, fixed_views=4, random_views=2)


def cli():
    script = Path(sys.executable).parent / "iso3d-render"
    return [str(script)] if script.exists() else [sys.executable, "-m", "training.render_cli"]


def run_cli(*args, timeout=600):
    return run(cli() + [str(a) for a in args], timeout=timeout)


def by_name(entries: dict) -> dict:
    """{file stem: object id} of manifest entries (ids are ``<stem>-<content hash>``)."""
    return {object_id.rsplit("-", 1)[0]: object_id for object_id in entries}
