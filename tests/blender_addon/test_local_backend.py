"""The Start / Stop local backend buttons: a real `iso3d serve` child process started from the preferences, the
session connecting to it and running a job through it, then stopped; bad preferences refused in words."""

from __future__ import annotations

import sys

import pytest

pytestmark = [pytest.mark.blender, pytest.mark.integration]
bpy = pytest.importorskip("bpy")

from blender_addon.session import SESSION  # noqa: E402
from tests.helpers.addon_session import drain_until  # noqa: E402
from tests.helpers.backend import free_port  # noqa: E402
from tests.helpers.paths import REPO_ROOT  # noqa: E402


def test_start_run_a_job_and_stop_the_local_backend(registered_addon, tmp_path):
    preferences = registered_addon
    preferences.backend_address = f"tcp://127.0.0.1:{free_port()}"
    preferences.local_python, preferences.local_model, preferences.local_device = sys.executable, "tiny", "cpu"
    preferences.local_data_folder = str(tmp_path / "data")
    preferences.previews_folder = str(tmp_path / "previews")
    SESSION.disconnect()
    try:
        assert SESSION.local_backend.status_line() == "Local backend: not started"
        assert bpy.ops.iso3d.start_local_backend() == {"FINISHED"}
        with pytest.raises(RuntimeError, match="already running"):
            bpy.ops.iso3d.start_local_backend()
        state = drain_until(lambda s: s.connection == "CONNECTED" and "tiny" in s.server)
        assert SESSION.local_backend.status_line() == "Local backend: running"
        assert (tmp_path / "data" / "serve.log").is_file()
        settings = bpy.context.scene.iso3d_generate
        settings.image_source, settings.image_path = "FILE", str(REPO_ROOT / "examples" / "example.png")
        settings.preview_steps = 2
        assert bpy.ops.iso3d.preview_views() == {"FINISHED"}
        state = drain_until(lambda s: s.state in ("done", "failed") and not s.request)
        assert state.state == "done", state.last_error
        assert list((tmp_path / "data" / "jobs").glob("*/job.json"))  # the job lives in the chosen data folder
        process = SESSION.local_backend.process
        assert bpy.ops.iso3d.stop_local_backend() == {"FINISHED"}
        assert process.poll() is not None and not SESSION.local_backend.running
        assert SESSION.local_backend.status_line() == "Local backend: not started"
        assert bpy.ops.iso3d.stop_local_backend() == {"CANCELLED"}  # nothing to stop: a warning, not an error
    finally:
        SESSION.local_backend.stop()
        SESSION.disconnect()


def test_bad_local_backend_preferences_are_refused_in_words(registered_addon, tmp_path):
    preferences = registered_addon
    preferences.backend_address = f"tcp://127.0.0.1:{free_port()}"
    preferences.local_data_folder = str(tmp_path / "data")
    preferences.local_python = str(tmp_path / "no-such-python")
    with pytest.raises(RuntimeError, match="does not exist"):
        bpy.ops.iso3d.start_local_backend()
    preferences.local_python, preferences.local_model = sys.executable, str(tmp_path / "missing.ckpt")
    with pytest.raises(RuntimeError, match="checkpoint .* does not exist"):
        bpy.ops.iso3d.start_local_backend()
    preferences.local_model = "tiny"
    preferences.backend_address = "tcp://192.0.2.7:5555"
    with pytest.raises(RuntimeError, match="loopback"):
        bpy.ops.iso3d.start_local_backend()
    assert not SESSION.local_backend.running
