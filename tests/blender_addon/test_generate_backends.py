"""The generation side of the extension against backends a test starts for itself (real bpy, real `iso3d serve
--model tiny` subprocesses): one killed mid-job and restarted while the file is saved, reopened and the add-on
reloaded, and one that admits only CURVE-keyed clients. ``SESSION.drain`` is called directly (timers never fire in
background mode)."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = [pytest.mark.blender, pytest.mark.integration]
bpy = pytest.importorskip("bpy")

import blender_addon  # noqa: E402
from blender_addon.session import SESSION  # noqa: E402
from tests.helpers.addon_session import SMALL, drain_until  # noqa: E402
from tests.helpers.backend import BackendProcess  # noqa: E402
from tests.helpers.paths import EXAMPLE_IMAGE as EXAMPLE  # noqa: E402


def test_killed_backend_restart_reopened_file_and_reloaded_addon_lose_nothing(registered_addon, tmp_path):
    backend = BackendProcess(tmp_path / "data").start()
    restarted = backend.restarted()
    try:
        registered_addon.backend_address = backend.address
        registered_addon.previews_folder = str(tmp_path / "previews")
        settings = bpy.context.scene.iso3d_generate
        settings.image_source, settings.image_path, settings.preset = "FILE", str(EXAMPLE), "tiny"
        settings.steps, settings.mesh_every, settings.options = 12, 4, json.dumps(SMALL)
        SESSION.disconnect()
        assert bpy.ops.iso3d.generate() == {"FINISHED"}
        state = drain_until(lambda s: s.state == "running" and s.step >= 2)
        job = state.job_id
        backend.kill()
        killed = time.monotonic()
        drain_until(lambda s: s.connection == "LOST")
        # shown on the job within a few seconds (the transport's disconnect; the heartbeat silence bound is
        # SILENCE_LOST_SECONDS = 8 s), with slack for a loaded 2-core machine
        assert time.monotonic() - killed < 10
        # Blender saves, the add-on is reloaded, the file is opened again, the backend comes back.
        blend = tmp_path / "scene.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(blend))
        blender_addon.unregister()
        bpy.ops.wm.open_mainfile(filepath=str(blend))
        blender_addon.register()
        assert bpy.context.scene.iso3d_job.job_id == job
        restarted.start()
        state = drain_until(lambda s: s.state in ("done", "failed"))
        assert state.state == "done", state.last_error
        assert state.job_id == job and state.connection == "CONNECTED"
        obj = bpy.data.objects[state.object_name]
        assert obj["iso3d_glb"].endswith(".glb") and len(obj.data.polygons) > 0
    finally:
        SESSION.disconnect()
        backend.stop()
        restarted.stop()


def test_curve_keys_from_the_preferences_reach_a_keyed_backend(registered_addon, tmp_path, monkeypatch):
    from backend.service.auth import generate_keys

    from blender_addon import session

    keys = generate_keys(tmp_path / "keys")
    backend = BackendProcess(tmp_path / "data", extra=["--curve-secret-key", str(keys["server_secret"]),
                                                       "--curve-allowed-clients", str(keys["client_public"].parent)])
    backend.start()
    monkeypatch.setattr(session, "NO_ANSWER_SECONDS", 1.0)
    try:
        registered_addon.backend_address = backend.address
        registered_addon.previews_folder = str(tmp_path / "previews")
        settings = bpy.context.scene.iso3d_generate
        settings.image_source, settings.image_path, settings.preview_steps = "FILE", str(EXAMPLE), 2
        SESSION.disconnect()
        assert bpy.ops.iso3d.connect() == {"FINISHED"}  # without keys: silence, said in plain words
        state = drain_until(lambda s: "No answer" in s.last_error)
        assert state.connection != "CONNECTED" and "CURVE" in state.last_error
        registered_addon.server_public_key = str(keys["server_public"])
        registered_addon.client_secret_key = str(keys["client_secret"])
        assert bpy.ops.iso3d.preview_views() == {"FINISHED"}
        state = drain_until(lambda s: s.state in ("done", "failed"))
        assert state.state == "done" and state.connection == "CONNECTED" and not state.last_error
    finally:
        SESSION.disconnect()
        backend.stop()
