"""The generation side of the extension end to end: real bpy, a real `iso3d serve --model tiny` subprocess on a free
loopback port, the operators, and ``SESSION.drain`` called directly (timers never fire in background mode)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.blender, pytest.mark.integration]
bpy = pytest.importorskip("bpy")

from blender_addon.core.client import decode_array  # noqa: E402
from blender_addon.session import SESSION  # noqa: E402
from tests.helpers.addon_session import SMALL, drain, drain_everything_sent, drain_until  # noqa: E402
from tests.helpers.paths import EXAMPLE_IMAGE as EXAMPLE  # noqa: E402
from tests.helpers.paths import REPO_ROOT  # noqa: E402
from tests.helpers.waiting import wait_until  # noqa: E402


@pytest.fixture(scope="module")
def backend(backend_processes):
    process = backend_processes()
    yield process
    process.stop()  # ~800 MB: not kept for the rest of the session


@pytest.fixture
def addon(registered_addon, backend, tmp_path):
    registered_addon.backend_address = backend.address
    registered_addon.previews_folder = str(tmp_path / "previews")
    settings = bpy.context.scene.iso3d_generate
    settings.image_source, settings.image_path = "FILE", str(EXAMPLE)
    settings.preview_steps, settings.preset, settings.seed = 2, "tiny", 3
    SESSION.disconnect()
    yield registered_addon
    SESSION.disconnect()


@pytest.fixture
def applied_meshes(monkeypatch):
    """The mesh messages the session applied, in order."""
    seen = []
    original = SESSION.apply

    def recording(context, settings, message):
        if message.type == "mesh":
            seen.append(message)
        return original(context, settings, message)

    monkeypatch.setattr(SESSION, "apply", recording)
    return seen


def test_preview_views_become_images_and_empties_around_the_cursor(addon):
    bpy.context.scene.cursor.location = (1.0, 2.0, 3.0)
    assert bpy.ops.iso3d.preview_views() == {"FINISHED"}
    state = drain_until(lambda s: s.state in ("done", "failed"))
    assert state.state == "done", state.last_error
    assert state.connection == "CONNECTED" and "tiny" in state.server
    images = [bpy.data.images[f"Isotropic3D preview {i}"] for i in range(4)]
    assert all(image.size[0] > 0 and image.size[1] > 0 for image in images)
    empties = [bpy.data.objects[f"Isotropic3D preview view {i}"] for i in range(4)]
    for empty, image in zip(empties, images):
        assert empty.type == "EMPTY" and empty.empty_display_type == "IMAGE" and empty.data == image
        offset = np.array(empty.matrix_world.translation) - np.array((1.0, 2.0, 3.0))
        assert np.linalg.norm(offset) == pytest.approx(2.5, abs=1e-4)
    assert len({tuple(np.round(e.matrix_world.translation, 3)) for e in empties}) == 4
    # one 2x2 sheet of the four views (view 0 top left; Blender's rows start at the bottom)
    sheet = bpy.data.images["Isotropic3D preview sheet"]
    width, height = images[0].size
    assert tuple(sheet.size) == (2 * width, 2 * height)
    pixels = np.empty(len(sheet.pixels), np.float32)
    sheet.pixels.foreach_get(pixels)
    view0 = np.empty(len(images[0].pixels), np.float32)
    images[0].pixels.foreach_get(view0)
    np.testing.assert_allclose(pixels.reshape(2 * height, 2 * width, 4)[height:, :width],
                               view0.reshape(height, width, 4), atol=1e-6)
    # "Generate from this seed" takes the preview's seed
    bpy.context.scene.iso3d_generate.seed = 11
    assert bpy.context.scene.iso3d_job.seed == 3 and bpy.ops.iso3d.generate_from_seed.poll()
    # A second preview replaces the same images and empties.
    assert bpy.ops.iso3d.preview_views() == {"FINISHED"}
    drain_until(lambda s: s.state == "done" and not s.request)
    assert len([o for o in bpy.data.objects if o.name.startswith("Isotropic3D preview view")]) == 4


def test_generate_streams_meshes_into_one_object_and_records_the_glb(addon, applied_meshes):
    settings = bpy.context.scene.iso3d_generate
    settings.steps, settings.mesh_every, settings.options = 3, 1, json.dumps(SMALL)
    assert bpy.ops.iso3d.generate() == {"FINISHED"}
    user_matrix = None

    def move_the_object_once():  # the artist moves the object while it grows: the transform must stay
        nonlocal user_matrix
        obj = bpy.data.objects.get("Isotropic3D example")
        if obj is not None and user_matrix is None:
            obj.location, obj.scale = (4.0, 0.0, 1.0), (2.0, 2.0, 2.0)
            bpy.context.view_layer.update()
            user_matrix = np.array(obj.matrix_world)

    state = drain_until(lambda s: s.state in ("done", "failed"), on_drain=move_the_object_once)
    assert state.state == "done", state.last_error
    generated = [o for o in bpy.data.objects if o.type == "MESH"]
    assert [o.name for o in generated] == ["Isotropic3D example"]
    obj = generated[0]
    assert len(applied_meshes) >= 2 and applied_meshes[-1].get("final")
    assert state.mesh_updates == len(applied_meshes)
    vertices, faces = decode_array(applied_meshes[-1], 0), decode_array(applied_meshes[-1], 1)
    assert len(obj.data.vertices) == len(vertices) and len(obj.data.polygons) == len(faces)
    np.testing.assert_allclose(np.array(obj.matrix_world), user_matrix, atol=1e-6)
    assert obj.data.color_attributes.active_color.name == "iso3d_color"
    assert obj.active_material.name == "Isotropic3D vertex colour"
    assert obj["iso3d_glb"].endswith(".glb") and Path(obj["iso3d_glb"]).is_file()
    assert obj["iso3d_job"] == state.job_id
    # Finish works on what Generate left: the same object gets a decimated, UV-mapped, textured mesh.
    generate_job, streamed_faces = state.job_id, len(obj.data.polygons)
    bpy.context.view_layer.objects.active = obj
    finish = bpy.context.scene.iso3d_finish
    finish.faces, finish.texture, finish.lods = max(streamed_faces // 3, 4), "256", ""
    assert bpy.ops.iso3d.finish() == {"FINISHED"}
    state = drain_until(lambda s: s.job_kind == "finish" and s.state in ("done", "failed") and not s.request)
    assert state.state == "done", state.last_error
    assert [o.name for o in bpy.data.objects if o.type == "MESH"] == ["Isotropic3D example"]
    assert 0 < len(obj.data.polygons) <= streamed_faces // 3 + 2 and obj.data.uv_layers.active is not None
    assert obj.active_material.name == "Isotropic3D baked Isotropic3D example"
    assert obj["iso3d_job"] == generate_job and obj["iso3d_glb"].endswith("asset.glb")
    np.testing.assert_allclose(np.array(obj.matrix_world), user_matrix, atol=1e-6)


def test_cancel_stops_the_job(addon):
    settings = bpy.context.scene.iso3d_generate
    settings.steps, settings.mesh_every, settings.options = 400, 0, json.dumps(SMALL)
    assert bpy.ops.iso3d.generate() == {"FINISHED"}
    drain_until(lambda s: s.state == "running" and s.step >= 1)
    assert bpy.ops.iso3d.cancel() == {"FINISHED"}
    state = drain_until(lambda s: s.state in ("cancelled", "done", "failed"))
    assert state.state == "cancelled" and state.last_error == ""  # what the artist asked for, not an error


def test_resume_after_cancel_streams_on_into_the_jobs_own_object_until_done(addon, monkeypatch):
    from blender_addon.panels import can_resume

    settings = bpy.context.scene.iso3d_generate
    steps = 8  # the checkpoint it resumes from is the one the cancel saved (its own come every 1000 steps)
    settings.steps, settings.mesh_every, settings.options = steps, 1, json.dumps({**SMALL, "run.checkpoint_every": 1000})
    assert bpy.ops.iso3d.generate() == {"FINISHED"}
    drain_until(lambda s: s.state == "running" and s.step >= 2 and s.mesh_updates >= 1)
    assert bpy.ops.iso3d.cancel() == {"FINISHED"}
    state = drain_until(lambda s: s.state in ("cancelled", "done", "failed"))
    assert state.state == "cancelled", state.last_error
    job, stopped_at, obj = state.job_id, state.step, bpy.data.objects[state.object_name]
    assert 2 <= stopped_at < steps and obj["iso3d_job"] == job
    drain_everything_sent()  # the job list the session asked for at the cancel
    assert can_resume(job, "generate", "cancelled")  # the backend lists it as resumable: Resume is offered
    applied, shown = [], []  # the job's progress and meshes; the scene's job state after each streamed step
    original = SESSION.apply

    def recording(context, settings, message):
        result = original(context, settings, message)
        if message.get("job") == job and message.type in ("progress", "mesh"):
            applied.append(message)
            if message.type == "progress" and message.get("phase") == "sds":
                shown.append(bpy.context.scene.iso3d_job.state)
        return result

    # the artist makes a preview meanwhile (it becomes the scene's job), then resumes from the job's row in Jobs
    assert bpy.ops.iso3d.preview_views() == {"FINISHED"}
    drain_until(lambda s: s.job_kind == "preview" and s.state in ("done", "failed") and not s.request)
    monkeypatch.setattr(SESSION, "apply", recording)
    assert bpy.ops.iso3d.resume(job=job) == {"FINISHED"}
    state = drain_until(lambda s: s.state in ("done", "failed") or bool(s.last_error))
    assert state.state == "done" and state.job_id == job and state.job_kind == "generate", state.last_error
    streamed = [m.get("step") for m in applied if m.type == "progress" and m.get("phase") == "sds"]
    assert streamed and streamed[0] == stopped_at + 1 and streamed[-1] == steps  # on from the saved step, not 0
    assert set(shown) == {"running"}  # shown running while it runs again (not left "cancelled")
    meshes = [m for m in applied if m.type == "mesh"]
    assert meshes and all(m.get("step") > stopped_at for m in meshes) and meshes[-1].get("final")
    assert [o for o in bpy.data.objects if o.type == "MESH"] == [obj]  # the same object, no second one
    assert len(obj.data.polygons) == len(decode_array(meshes[-1], 1)) and obj["iso3d_job"] == job
    assert obj["iso3d_glb"].endswith("mesh.glb")
    # a finished job is not resumed again: the backend's refusal shows on it in words, and it stays done
    assert bpy.ops.iso3d.resume() == {"FINISHED"}
    state = drain_until(lambda s: bool(s.last_error), 60)
    assert state.state == "done" and "only a cancelled job can be resumed" in state.last_error


def test_problems_are_reported_in_plain_words(addon):
    settings = bpy.context.scene.iso3d_generate
    settings.image_path = "/no/such/image.png"
    with pytest.raises(RuntimeError, match="does not exist"):
        bpy.ops.iso3d.preview_views()
    assert "does not exist" in bpy.context.scene.iso3d_job.last_error
    settings.image_path = str(REPO_ROOT / "README.md")  # read by a child process: the answer comes in a drain
    assert bpy.ops.iso3d.generate() == {"FINISHED"}
    state = drain_until(lambda s: s.state == "failed")
    assert "could not be read" in state.last_error and "not an image" in state.last_error and not state.request
    settings.image_path, settings.options = str(EXAMPLE), "{not json"
    with pytest.raises(RuntimeError, match="not valid JSON"):
        bpy.ops.iso3d.generate()
    settings.options = json.dumps({"nerf.no_such_setting": 1})  # refused by the backend
    assert bpy.ops.iso3d.generate() == {"FINISHED"}
    state = drain_until(lambda s: s.state == "failed")
    assert state.last_error and "Traceback" not in state.last_error
    with pytest.raises(RuntimeError, match="no job|already"):
        bpy.context.scene.iso3d_job.job_id = ""
        bpy.ops.iso3d.cancel()


def test_remote_backends_need_online_access_and_keys(addon):
    addon.backend_address = "tcp://192.0.2.7:5555"
    expected = "needs CURVE keys" if bpy.app.online_access else "offline mode"
    with pytest.raises(RuntimeError, match=expected):
        bpy.ops.iso3d.preview_views()
    with pytest.raises(RuntimeError, match=expected):
        bpy.ops.iso3d.connect()
    assert SESSION.client is None  # nothing was opened towards that address


def test_a_connection_refused_once_the_photo_is_ready_fails_the_job_in_words(addon, tmp_path):
    """The photo is downscaled in a child first; the refusal (no keys for a remote backend) comes at the drain that
    sends it, where it must become the scene's error, not an exception out of the UI timer."""
    from PIL import Image

    Image.new("RGB", (1200, 800), (200, 40, 40)).save(tmp_path / "photo.png")  # over MAX_SEND_SIDE: downscaled
    settings = bpy.context.scene.iso3d_generate
    settings.image_path = str(tmp_path / "photo.png")
    addon.backend_address = "tcp://192.0.2.7:5555"
    expected = "needs CURVE keys" if bpy.app.online_access else "offline mode"
    assert bpy.ops.iso3d.preview_views() == {"FINISHED"}
    assert bpy.context.scene.iso3d_job.state == "preparing"
    state = drain_until(lambda s: s.state != "preparing", 300)  # the child starts bpy: a minute under load 15
    assert state.state == "failed" and expected in state.last_error, state.last_error
    assert SESSION.client is None and not SESSION.preparing


def test_finish_after_generate_finishes_the_new_object_on_its_own(addon):
    settings = bpy.context.scene.iso3d_generate
    settings.steps, settings.mesh_every, settings.options = 3, 0, json.dumps(SMALL)
    finish = bpy.context.scene.iso3d_finish
    finish.after_generate, finish.faces, finish.texture, finish.lods = True, 60, "256", "30"
    assert bpy.ops.iso3d.generate() == {"FINISHED"}
    # the generate job's "done" sends the finish job in the same drain
    state = drain_until(lambda s: s.job_kind == "finish" and s.state in ("done", "failed") and not s.request)
    assert state.state == "done", state.last_error
    obj = bpy.data.objects[state.object_name]
    assert abs(len(obj.data.polygons) - 60) <= 2 and obj.data.uv_layers.active is not None
    assert obj.active_material.name.startswith("Isotropic3D baked")
    assert [child.name for child in obj.children] == [f"{obj.name} LOD1"]
    # attaching to the generate job again replays its final mesh and "done": the finished asset stays, and no
    # second finish is sent
    finish_job, finished_faces = obj["iso3d_finish_job"], len(obj.data.polygons)
    assert bpy.ops.iso3d.connect(job=obj["iso3d_job"]) == {"FINISHED"}
    state = drain_until(lambda s: s.job_id == obj["iso3d_job"] and s.state == "done")
    drain_everything_sent()  # a finish job sent on that "done" would have been accepted by now
    assert state.job_kind == "generate" and not state.request and obj["iso3d_finish_job"] == finish_job
    assert len(obj.data.polygons) == finished_faces and obj.active_material.name.startswith("Isotropic3D baked")
    # a new generation into the finished object makes it a plain generated object again (vertex colours)
    settings.result_object, finish.after_generate = obj, False
    assert bpy.ops.iso3d.generate() == {"FINISHED"}
    state = drain_until(lambda s: s.job_kind == "generate" and s.state in ("done", "failed") and not s.request)
    assert state.state == "done", state.last_error
    assert "iso3d_finish_job" not in obj and obj.active_material.name == "Isotropic3D vertex colour"


def artist_edit_then_undo(name: str) -> None:
    """What an artist does after results landed: some edit of their own (one undo step), then Ctrl-Z."""
    empty = bpy.data.objects.new(name, None)
    bpy.context.scene.collection.objects.link(empty)
    assert bpy.ops.ed.undo_push(message=name) == {"FINISHED"}
    assert bpy.ops.ed.undo() == {"FINISHED"}
    assert name not in bpy.data.objects  # the artist's edit is what was undone


def test_undo_after_a_streamed_mesh_and_after_finish_keeps_the_results_and_the_running_job(addon):
    settings = bpy.context.scene.iso3d_generate
    settings.steps, settings.mesh_every, settings.options = 8, 2, json.dumps(SMALL)
    assert bpy.ops.iso3d.generate() == {"FINISHED"}
    state = drain_until(lambda s: s.mesh_updates >= 1 and s.state == "running")
    job, name, updates = state.job_id, state.object_name, state.mesh_updates
    artist_edit_then_undo("artist edit 1")
    state = bpy.context.scene.iso3d_job
    assert name in bpy.data.objects and len(bpy.data.objects[name].data.polygons) > 0
    assert state.job_id == job and state.state == "running" and state.mesh_updates >= updates
    state = drain_until(lambda s: s.state in ("done", "failed"), 300)  # still streaming into the same object
    assert state.state == "done" and state.job_id == job and state.mesh_updates > updates
    obj = bpy.data.objects[name]
    assert obj["iso3d_job"] == job and [o.name for o in bpy.data.objects if o.type == "MESH"] == [name]
    bpy.context.view_layer.objects.active = obj
    bpy.context.scene.iso3d_finish.faces, bpy.context.scene.iso3d_finish.texture = 40, "256"
    assert bpy.ops.iso3d.finish() == {"FINISHED"}
    state = drain_until(lambda s: s.job_kind == "finish" and s.state in ("done", "failed") and not s.request)
    assert state.state == "done", state.last_error
    finish_job = state.job_id
    artist_edit_then_undo("artist edit 2")
    obj, state = bpy.data.objects[name], bpy.context.scene.iso3d_job
    assert obj.get("iso3d_finish_job") == finish_job and obj.active_material.name.startswith("Isotropic3D baked")
    assert state.job_id == finish_job and state.state == "done"


def test_no_second_job_runs_unseen_and_a_waiting_one_can_be_withdrawn(addon, backend):
    settings = bpy.context.scene.iso3d_generate
    settings.steps, settings.mesh_every, settings.options = 400, 0, json.dumps(SMALL)
    assert bpy.ops.iso3d.generate() == {"FINISHED"}
    assert not bpy.ops.iso3d.generate.poll() and not bpy.ops.iso3d.preview_views.poll()  # waiting for accepted
    state = drain_until(lambda s: s.state == "running")
    assert not bpy.ops.iso3d.generate.poll() and not bpy.ops.iso3d.preview_views.poll()  # running
    with pytest.raises(RuntimeError, match="running in this scene"):
        bpy.ops.iso3d.generate()
    assert bpy.ops.iso3d.cancel() == {"FINISHED"}
    state = drain_until(lambda s: s.state == "cancelled", 60)
    assert state.last_error == "" and bpy.ops.iso3d.generate.poll()
    # The backend is down: a Preview waits visibly, a second one is refused, Cancel withdraws the first.
    addon.backend_address = "tcp://127.0.0.1:9"  # the discard port: nothing listens there
    assert bpy.ops.iso3d.preview_views() == {"FINISHED"}
    drain()
    assert bpy.context.scene.iso3d_job.request and not bpy.ops.iso3d.preview_views.poll()
    assert bpy.ops.iso3d.cancel() == {"FINISHED"}
    state = bpy.context.scene.iso3d_job
    assert state.state == "cancelled" and not state.request
    assert all(json.loads(frames[0])["type"] != "submit" for frames in SESSION.client.outbox)  # never sent
    assert bpy.ops.iso3d.preview_views.poll()


def test_new_results_land_at_the_cursor_in_the_active_collection_and_attach_keeps_each_job_in_its_object(addon):
    scene, view_layer = bpy.context.scene, bpy.context.view_layer
    artist = bpy.data.collections.new("Artist")
    scene.collection.children.link(artist)
    view_layer.active_layer_collection = view_layer.layer_collection.children["Artist"]
    settings = scene.iso3d_generate
    settings.steps, settings.mesh_every, settings.options = 3, 0, json.dumps(SMALL)
    objects, jobs = [], []
    for _ in range(2):
        scene.cursor.location = (2.0, -1.0, 0.5)  # both at the same cursor: they must not overlap
        assert bpy.ops.iso3d.generate() == {"FINISHED"}
        state = drain_until(lambda s: s.state in ("done", "failed") and not s.request, 120)
        assert state.state == "done", state.last_error
        objects.append(bpy.data.objects[state.object_name])
        jobs.append(state.job_id)
    first, second = objects
    assert first.name != second.name and first.users_collection[0] == artist == second.users_collection[0]
    assert view_layer.objects.active == second and second.select_get() and not first.select_get()
    np.testing.assert_allclose(first.location, (2.0, -1.0, 0.5), atol=1e-6)
    from mathutils import Vector

    boxes = [np.array([o.matrix_world @ Vector(corner) for corner in o.bound_box]) for o in objects]
    lows, highs = [b.min(axis=0) for b in boxes], [b.max(axis=0) for b in boxes]
    assert lows[1][0] >= highs[0][0]  # side by side along +X, not inside each other
    # Attaching to the first job again replays its mesh into the first object; the second is left alone.
    second_faces = len(second.data.polygons)
    second.data.clear_geometry()
    second_mesh = second.data
    assert bpy.ops.iso3d.connect(job=jobs[0]) == {"FINISHED"}
    state = drain_until(lambda s: s.job_id == jobs[0] and s.state == "done")
    assert state.object_name == first.name and len(first.data.polygons) > 0
    assert second.data == second_mesh and len(second.data.polygons) == 0 and second_faces > 0


def test_a_24_megapixel_photo_costs_the_ui_well_under_two_seconds_and_leaves_no_datablock(addon, tmp_path):
    from PIL import Image

    rows = np.linspace(0, 255, 4000, dtype=np.float32)[:, None, None]
    photo = np.broadcast_to(rows, (4000, 6000, 3)).astype(np.uint8)  # 6000x4000 = 24 MP, as a camera makes
    Image.fromarray(photo).save(tmp_path / "camera.jpg", quality=90)
    settings = bpy.context.scene.iso3d_generate
    settings.image_path = str(tmp_path / "camera.jpg")
    images_before = set(bpy.data.images.keys())
    ui_seconds = 0.0  # time the main thread spent in the add-on (operator + drains), the UI's freeze
    started = time.perf_counter()
    assert bpy.ops.iso3d.preview_views() == {"FINISHED"}
    ui_seconds += time.perf_counter() - started

    def sent() -> bool:
        nonlocal ui_seconds
        started = time.perf_counter()
        drain()
        ui_seconds += time.perf_counter() - started
        return bpy.context.scene.iso3d_job.state != "preparing"

    wait_until(sent, 300, "the downscaled photo to be sent")  # the child starts bpy: a minute under load 15
    assert bpy.context.scene.iso3d_job.state != "failed", bpy.context.scene.iso3d_job.last_error
    # The bound. Measured 0.19-0.25 s on a 2-core machine under load 14 (the decode runs in a child
    # process; here only the small result is encoded); the pure-Python encoding it replaces took 31 s.
    assert ui_seconds < 2.0, ui_seconds
    state = drain_until(lambda s: s.state in ("done", "failed") and not s.request, 180)
    assert state.state == "done", state.last_error
    assert set(bpy.data.images.keys()) - images_before == {f"Isotropic3D preview {i}" for i in range(4)} | {
        "Isotropic3D preview sheet"}
