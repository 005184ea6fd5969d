"""The add-on's one connection to the backend and the jobs it follows (module-level ``SESSION``).

``drain(context, settings)`` polls the client (never blocks) and applies each message to the scene that owns its job through
``scene_sync``: preview views -> Image datablocks and image empties around the job's target; ``mesh`` -> one object
replaced in place (a ``finish`` job's textured meshes: the object's mesh + baked material, then its LODs);
``done`` -> the GLB path on that object; progress and errors -> ``scene.iso3d_job``. In the UI a
``bpy.app.timers`` callback calls it (``session_loop``); in background mode (tests, ``bpy.app.background``) timers
never fire, so it is called directly. The session receives the preferences it needs with each call
(``core.connection.SessionSettings``, built by the caller): it imports no UI module. Re-attaching is automatic:
whenever a scene holds an unfinished job id (after reopening a file, reloading the add-on, or a backend restart seen
as a reconnection), the session attaches to it again.

Undo: the job state of each scene is mirrored here, outside Blender's undo memfile, and written back after every
undo/redo, so Ctrl-Z never orphans a running job. Results that land (a job's first mesh, its final mesh, a finished
level, preview views, done) push their own undo step, so an undo of the artist's next edit stops there instead of
rolling back past them; intermediate meshes do not (they would flood the undo history) and the next one refreshes
the object after an undo.
"""

from __future__ import annotations

import json
import re
import time

import bpy

from .core.connection import SessionSettings, connection_target
from .core.local_backend import LocalBackend
from .scene_sync import FINISH_JOB_PROPERTY

HEARTBEAT_SECONDS = 2.0
# A connected backend answers every heartbeat ping at once (its socket loop never waits for the GPU); this long
# without any reply (3 heartbeats, plus slack for a loaded machine) means it is gone even when the transport
# saw no disconnect (an unplugged network, a frozen machine).
SILENCE_LOST_SECONDS = 3 * HEARTBEAT_SECONDS + 2.0
ATTACH_RETRY_SECONDS = 5.0
NO_ANSWER_SECONDS = 10.0
FINISHED_STATES = ("done", "failed", "cancelled")


def _job_scenes(job: str):
    return [scene for scene in bpy.data.scenes if getattr(scene, "iso3d_job", None) and scene.iso3d_job.job_id == job]


def _request_scene(request: str):
    for scene in bpy.data.scenes:
        if getattr(scene, "iso3d_job", None) and request and scene.iso3d_job.request == request:
            return scene
    return None


_ABSOLUTE_PATH = re.compile(r"""(?:[A-Za-z]:\\|/)(?:[^\s'"`:]+[/\\])+([^\s'"`/\\:]+)""")


def _plain_error(code: str, message: str) -> str:
    """An error for an artist: the backend's sentence (its file paths cut to their file names: they are the
    backend machine's, not the artist's), with the code only where it adds something."""
    message = _ABSOLUTE_PATH.sub(r"\1", (message or "").strip()) or code.replace("_", " ")
    return message[0].upper() + message[1:]


def _job_state_values(state) -> dict:
    return {name: (tuple(getattr(state, name)) if name == "target" else getattr(state, name))
            for name in state.bl_rna.properties.keys() if name != "rna_type"}


def announce(level: str, text: str) -> None:
    """A report where the artist looks (the status bar, the Info log) from outside an operator: through the
    report operator. An ERROR report raises RuntimeError when called from Python; it has been shown by then."""
    try:
        bpy.ops.iso3d.report(level=level, message=text)
    except (RuntimeError, AttributeError):  # the error report itself, or the add-on is being unregistered
        pass


def push_undo_step(message: str) -> None:
    """An undo step of the current data (results that landed), so that undoing the artist's next edit stops at
    them. Not in the middle of the artist's own work (edit/sculpt modes, a running modal tool such as a grab),
    whose undo steps are their own; never fails the caller (without an undo stack there is nothing to protect)."""
    context = bpy.context
    if getattr(context, "mode", "OBJECT") != "OBJECT" or any(
            getattr(window, "modal_operators", None) for window in getattr(context.window_manager, "windows", [])):
        return
    try:
        bpy.ops.ed.undo_push(message=message)
    except RuntimeError:
        pass


class Session:
    def __init__(self):
        self.client = None
        self.address = ""
        self.curve = None
        self.links_seen = 0
        self.last_heartbeat = 0.0
        self.connect_started = 0.0
        self.no_answer_message = ""
        self.attached: dict[str, float] = {}  # job id -> when attach was last sent on this connection
        self.job_states: dict[str, dict] = {}  # scene name -> its iso3d_job values, kept outside the undo memfile
        self.withdrawn: set[str] = set()  # request ids cancelled before the backend accepted them
        self.resuming: dict[str, str] = {}  # job id -> request id of a ``resume`` the backend has not answered
        self.undo_reasons: list[str] = []  # results applied by this drain that deserve an undo step
        self.announcements: list[tuple[str, str]] = []  # (INFO|ERROR, text): a job of a scene ended
        self.lost_since: float | None = None  # when the connection was last seen lost (monotonic)
        self.preparing: dict[str, tuple] = {}  # scene name -> (PreparedImage, kind, job settings, object name)
        self.backend_jobs: list[dict] = []  # the backend's recent jobs (welcome / jobs): job, kind, name, status, ...
        self.backend_settings: dict = {}  # kind -> wire key -> {type, default, min, max, choices, help} (welcome)
        # kept in the driver namespace so that reloading the add-on keeps the handle of a running local backend
        self.local_backend = bpy.app.driver_namespace.setdefault("iso3d_local_backend", LocalBackend())

    # -- connection -----------------------------------------------------------------------------------------
    def connect(self, context, settings: SessionSettings, force: bool = False):
        """The client for the settings' address (created on first use; ConnectionRefused if not allowed)."""
        from .core.client import BackendClient

        address, curve = connection_target(settings)
        if self.client is not None and not force and (address, curve) == (self.address, self.curve):
            return self.client
        self.disconnect()
        self.client = BackendClient(address, curve=curve, client_name=settings.client_name)
        self.address, self.curve = address, curve
        self.links_seen = 0
        self.connect_started = time.monotonic()
        self.no_answer_message = ""
        self.attached.clear()
        self.client.hello()
        for scene in bpy.data.scenes:
            if getattr(scene, "iso3d_job", None) is not None:
                scene.iso3d_job.connection = "CONNECTING"
        return self.client

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None
        self.attached.clear()

    def shutdown(self) -> None:
        """Add-on unregistered: close the socket. A local backend keeps running (its jobs go on; the reloaded
        add-on finds it again); it stops when Blender exits or by the Stop button."""
        self.disconnect()
        self.job_states.clear()
        self.withdrawn.clear()
        self.resuming.clear()
        for prepared, *_ in self.preparing.values():
            prepared.cancel()
        self.preparing.clear()

    # -- jobs -----------------------------------------------------------------------------------------------
    def submit(self, context, settings: SessionSettings, kind: str, image_png: bytes | None, job_settings: dict,
               object_name: str = "", scene=None) -> str:
        """Send a job for ``scene`` (default ``context.scene``); ``object_name``: the object its meshes go to
        (generate, finish)."""
        scene = scene or context.scene
        client = self.connect(context, settings)
        state = scene.iso3d_job
        request = client.submit(kind, image_png, job_settings, name=object_name)
        state.request, state.job_id, state.job_kind, state.state = request, "", kind, "queued"
        state.phase, state.step, state.total, state.eta, state.position = "submitted", 0, 0, -1.0, 0
        state.last_error, state.mesh_updates, state.artifacts, state.lod_levels = "", 0, "", 0
        state.target = tuple(scene.cursor.location)
        state.seed = int(job_settings.get("seed", scene.iso3d_generate.seed))
        if kind in ("generate", "finish"):
            state.object_name = object_name
        self.remember_job_states()
        return request

    def submit_when_ready(self, context, settings: SessionSettings, kind: str, prepared, job_settings: dict,
                          object_name: str = "") -> None:
        """Send the job as soon as its input image is ready (at once when it is; else from a later drain, while
        a child process downscales a photo). The scene shows "preparing" meanwhile."""
        scene = context.scene
        if prepared.ready():
            self.submit(context, settings, kind, prepared.result(), job_settings, object_name)
            return
        self.preparing[scene.name] = (prepared, kind, job_settings, object_name)
        state = scene.iso3d_job
        state.job_kind, state.state, state.phase, state.last_error = kind, "preparing", "preparing the image", ""
        state.step = state.total = 0

    def _submit_prepared(self, context, settings: SessionSettings) -> None:
        from .core.image_downscale import ImageInputError

        for scene_name, (prepared, kind, job_settings, object_name) in list(self.preparing.items()):
            scene = bpy.data.scenes.get(scene_name)
            if scene is None:
                del self.preparing[scene_name]
                continue
            if not prepared.ready():
                continue
            del self.preparing[scene_name]
            try:
                self.submit(context, settings, kind, prepared.result(), job_settings, object_name, scene=scene)
            except (ImageInputError, ConnectionError, ValueError) as error:
                state = scene.iso3d_job
                state.state, state.phase, state.last_error = "failed", "", str(error)
                self.announcements.append(("ERROR", f"Isotropic3D: {error}"))

    def cancel(self, context, settings: SessionSettings, job: str = "") -> None:
        """Cancel ``job`` (default: the scene's). A submission the backend has not accepted yet (e.g. it is
        down) is withdrawn here: it never starts, or is cancelled as soon as the backend accepts it."""
        state = context.scene.iso3d_job
        waiting = self.preparing.pop(context.scene.name, None) if not job else None
        if waiting is not None:
            waiting[0].cancel()  # stop the image reader
            state.state, state.phase = "cancelled", ""
            return
        job = job or state.job_id
        if not job and state.request:
            self.withdrawn.add(state.request)
            if self.client is not None:
                self.client.withdraw(state.request)
            state.request, state.state, state.phase, state.last_error = "", "cancelled", "", ""
            self.remember_job_states()
            return
        if not job:
            raise ValueError("There is no job to cancel")
        self.connect(context, settings).cancel(job)

    def resume(self, context, settings: SessionSettings, job: str = "") -> None:
        """Resume ``job`` (default: the scene's), a cancelled generate job, from the step it saved: it is followed
        in this scene and streams into its own object again (``accepted`` makes it queued/running here; a refusal
        is shown on it in words and leaves it as it was)."""
        state = context.scene.iso3d_job
        job = job or state.job_id
        if not job:
            raise ValueError("There is no job to resume")
        client = self.connect(context, settings)
        if job != state.job_id:
            self._follow(context, job)
            state.state = "cancelled"  # as listed; the answer to resume makes it queued
        self.resuming[job] = client.resume(job)
        state.last_error = ""
        self.remember_job_states()

    def attach(self, context, settings: SessionSettings, job: str) -> None:
        """Follow ``job`` in this scene. Another job than the scene's brings its results into its own object (the
        one it made earlier, else a new one), never into the object of the job followed before."""
        self._follow(context, job)
        self.connect(context, settings).attach(job)
        self.attached[job] = time.monotonic()
        self.remember_job_states()

    def _follow(self, context, job: str) -> None:
        """Make ``job`` the scene's job (its results into its own object), unless it is already."""
        from .scene_sync import FINISH_JOB_PROPERTY, JOB_PROPERTY

        state = context.scene.iso3d_job
        if state.job_id != job:
            state.job_id, state.state, state.request, state.last_error = job, "", "", ""
            state.phase, state.step, state.total, state.eta, state.mesh_updates = "", 0, 0, -1.0, 0
            owner = next((obj for obj in bpy.data.objects if obj.type == "MESH" and job in (
                obj.get(JOB_PROPERTY), obj.get(FINISH_JOB_PROPERTY))), None)
            state.object_name = owner.name if owner is not None else ""
            state.target = tuple(context.scene.cursor.location)

    # -- job state outside the undo memfile -------------------------------------------------------------------
    def remember_job_states(self) -> None:
        for scene in bpy.data.scenes:
            state = getattr(scene, "iso3d_job", None)
            if state is not None and (state.job_id or state.request or scene.name in self.job_states):
                self.job_states[scene.name] = _job_state_values(state)

    def restore_job_states(self) -> None:
        """After an undo/redo: the scenes' job states as the session last knew them (the memfile's are older)."""
        for scene in bpy.data.scenes:
            state, values = getattr(scene, "iso3d_job", None), self.job_states.get(scene.name)
            if state is None or values is None:
                continue
            for name, value in values.items():
                current = getattr(state, name)
                if (tuple(current) if name == "target" else current) != value:
                    setattr(state, name, value)

    def _reattach_unfinished(self, context, settings: SessionSettings) -> None:
        """Attach to every unfinished job of the open file that this connection does not follow yet."""
        now = time.monotonic()
        for scene in bpy.data.scenes:
            state = getattr(scene, "iso3d_job", None)
            if state is None or not state.active or state.request:
                continue
            if state.job_id in self.attached and now - self.attached[state.job_id] < ATTACH_RETRY_SECONDS:
                continue
            if state.job_id in self.attached and state.connection == "CONNECTED":
                continue  # following it already
            try:
                client = self.connect(context, settings)
            except Exception as error:  # noqa: BLE001 - refused by the preferences: say so, retry later
                state.last_error = str(error)
                self.attached[state.job_id] = now
                continue
            client.attach(state.job_id)
            self.attached[state.job_id] = now

    # -- the drain ------------------------------------------------------------------------------------------
    def has_work(self) -> bool:
        return self.client is not None or bool(self.preparing) or any(
            getattr(scene, "iso3d_job", None) is not None and scene.iso3d_job.active for scene in bpy.data.scenes
        )

    def drain(self, context, settings: SessionSettings, max_messages: int = 64) -> int:
        """Apply what the backend sent (never blocks). Returns the number of messages applied."""
        if self.preparing:
            self._submit_prepared(context, settings)
        self._reattach_unfinished(context, settings)
        client = self.client
        if client is None:
            while self.announcements:
                announce(*self.announcements.pop(0))
            return 0
        messages = client.poll(max_messages)
        if client.links > self.links_seen:  # the transport came (back) up: a restarted backend forgot us
            reconnected = self.links_seen > 0
            self.links_seen = client.links
            if reconnected:
                client.hello()
                self.attached.clear()
                self._reattach_unfinished(context, settings)
        self._set_connection(self._connection_state(client, messages))
        self._report_silence(client)
        now = time.monotonic()
        if now - self.last_heartbeat > HEARTBEAT_SECONDS:
            self.last_heartbeat = now
            client.ping()
        latest_mesh = {}
        for index, message in enumerate(messages):
            if message.type == "mesh":
                latest_mesh[message.get("job")] = index
        applied = 0
        self.undo_reasons.clear()
        for index, message in enumerate(messages):
            if message.type == "mesh" and latest_mesh.get(message.get("job")) != index and not message.get("final"):
                continue  # a newer mesh of the same job is in this batch
            try:
                self.apply(context, settings, message)
            except Exception as error:  # noqa: BLE001 - one bad message must not stop the stream
                for scene in _job_scenes(message.get("job")) or [context.scene]:
                    scene.iso3d_job.last_error = f"Could not apply the backend's {message.type}: {error}"
            applied += 1
        if applied or self.job_states:
            self.remember_job_states()
        if self.undo_reasons:
            push_undo_step(f"Isotropic3D: {', '.join(dict.fromkeys(self.undo_reasons))}")
        while self.announcements:
            announce(*self.announcements.pop(0))
        return applied

    def _connection_state(self, client, messages) -> str:
        silent = client.last_reply is not None and time.monotonic() - client.last_reply > SILENCE_LOST_SECONDS
        if client.links and (not client.link_up or silent):
            self.lost_since = self.lost_since or time.monotonic()
            return "LOST"
        self.lost_since = None
        if client.link_up and client.connected:
            return "CONNECTED"
        return "CONNECTING"

    def _report_silence(self, client) -> None:
        """Say so when a new connection gets no answer at all (no backend there, or one that wants CURVE keys)."""
        if client.connected:
            if self.no_answer_message:
                for scene in bpy.data.scenes:
                    state = getattr(scene, "iso3d_job", None)
                    if state is not None and state.last_error == self.no_answer_message:
                        state.last_error = ""
                self.no_answer_message = ""
            return
        waited = time.monotonic() - self.connect_started
        if self.no_answer_message or waited < NO_ANSWER_SECONDS:
            return
        self.no_answer_message = (
            f"No answer from the backend at {self.address} for {waited:.0f} s: is it running there? A backend "
            "started with CURVE keys ignores clients without the right keys (set them in the add-on preferences)"
        )
        for scene in bpy.data.scenes:
            state = getattr(scene, "iso3d_job", None)
            if state is not None:
                state.last_error = self.no_answer_message

    def _set_connection(self, value: str) -> None:
        for scene in bpy.data.scenes:
            state = getattr(scene, "iso3d_job", None)
            if state is not None and state.connection != value:
                state.connection = value

    # -- applying one message -------------------------------------------------------------------------------
    def apply(self, context, settings: SessionSettings, message) -> None:
        handler = getattr(self, f"_on_{message.type}", None)
        if handler is not None:
            handler(context, settings, message)

    def refresh_jobs(self, context, settings: SessionSettings) -> None:
        """Ask the backend for its recent jobs (the answer, ``jobs``, fills ``backend_jobs``)."""
        self.connect(context, settings).list_jobs()

    def _on_jobs(self, context, settings, message) -> None:
        self.backend_jobs = [job for job in message.get("jobs") if isinstance(job, dict) and job.get("job")]

    def _on_welcome(self, context, settings, message) -> None:
        if isinstance(message.get("jobs"), list):
            self.backend_jobs = [job for job in message.get("jobs") if isinstance(job, dict) and job.get("job")]
        if isinstance(message.get("settings"), dict):
            from .core.job_settings import apply_backend_defaults

            self.backend_settings = message.get("settings")
            for scene in bpy.data.scenes:
                if getattr(scene, "iso3d_generate", None) is not None:
                    apply_backend_defaults(scene, self.backend_settings)
        server = f"{message.get('server')} · {message.get('model')} on {message.get('device')}"
        if not message.get("trained"):
            server += " (untrained weights)"
        for scene in bpy.data.scenes:
            if getattr(scene, "iso3d_job", None) is not None:
                scene.iso3d_job.server = server

    def _on_accepted(self, context, settings, message) -> None:
        job = message.get("job")
        if message.get("request", "") in self.withdrawn:  # cancelled by the artist before it was accepted
            self.withdrawn.discard(message.get("request", ""))
            if self.client is not None:
                self.client.cancel(job)
            return
        scene = _request_scene(message.get("request", ""))
        scenes = [scene] if scene is not None else _job_scenes(job)
        resumed = bool(message.get("request")) and self.resuming.get(job) == message.get("request")
        if resumed:  # the answer to our resume (not an attach's): it runs again from its saved step
            del self.resuming[job]
        for scene in scenes:
            state = scene.iso3d_job
            state.job_id, state.job_kind, state.request = job, message.get("kind"), ""
            state.position = message.get("position")
            if state.state not in FINISHED_STATES or resumed:
                state.state = "queued" if message.get("position") > 0 else "running"
            if resumed:
                state.phase, state.last_error, state.eta = "resuming", "", -1.0
            self.attached[job] = time.monotonic()
        if resumed and self.client is not None:
            self.client.list_jobs()  # the Jobs list shows it running again

    def _on_progress(self, context, settings, message) -> None:
        for scene in _job_scenes(message.get("job")):
            state = scene.iso3d_job
            state.phase, state.step, state.total = message.get("phase"), message.get("step"), message.get("total")
            state.position = message.get("position", 0)
            state.eta = message.get("eta", -1.0)
            if state.state not in FINISHED_STATES:
                state.state = "queued" if message.get("phase") == "queued" else "running"

    def _on_views(self, context, settings, message) -> None:
        from . import scene_sync

        for scene in _job_scenes(message.get("job")):
            state = scene.iso3d_job
            prefix = "Isotropic3D preview" if message.get("kind") == "preview" else f"{state.object_name} render"
            folder = f"{settings.previews_folder}/{message.get('job')}"
            images = [
                scene_sync.load_png_image(f"{prefix} {index}", png, folder)
                for index, png in enumerate(message.payloads)
            ]
            if message.get("kind") == "preview":
                collection = _collection(scene, "Isotropic3D previews")
                scene_sync.place_view_empties(prefix, images, message.get("c2w"), target=tuple(state.target),
                                              collection=collection)
                scene_sync.show_in_image_editor(scene_sync.preview_sheet(f"{prefix} sheet", images))
            self.undo_reasons.append("preview views")

    def _on_mesh(self, context, settings, message) -> None:
        from . import scene_sync
        from .core.client import decode_array

        job = message.get("job")
        vertices, faces, colours = (decode_array(message, index) for index in range(3))
        for scene in _job_scenes(job):
            state = scene.iso3d_job
            state.object_name = state.object_name or f"Isotropic3D {job[:8]}"
            target = bpy.data.objects.get(state.object_name)
            if len(message.payloads) == 5:
                self._apply_finished(context, settings, scene, message, vertices, faces, colours)
                self.undo_reasons.append("finished mesh")
            elif target is not None and scene_sync.finished_from(target, job):
                continue  # a replay of the generation this object was finished from: keep the finished asset
            else:
                created = target is None or target.type != "MESH"
                obj = scene_sync.apply_mesh(state.object_name, vertices, faces, colours, job=job,
                                            collection=_active_collection(context, scene))
                if created:
                    scene_sync.place_new_object(obj, tuple(state.target), _view_layer(context, scene))
                state.object_name = obj.name
                if created or message.get("final"):
                    self.undo_reasons.append("mesh")
            state.mesh_updates += 1
            if message.get("final"):
                state.phase = "final mesh"

    def _apply_finished(self, context, settings: SessionSettings, scene, message, vertices, faces, colours) -> None:
        """A finish job's level: 0 replaces the object's mesh and material, i > 0 is its i-th LOD."""
        from . import scene_sync
        from .core.client import decode_array

        state, job, level = scene.iso3d_job, message.get("job"), message.get("level", 0)
        main = bpy.data.objects.get(state.object_name)
        if main is None or main.type != "MESH":  # a finished asset imported into a file without its object
            main = scene_sync.apply_mesh(state.object_name, vertices, faces, colours,
                                         collection=_active_collection(context, scene))
            scene_sync.place_new_object(main, tuple(state.target), _view_layer(context, scene))
            state.object_name = main.name
        name = main.name if level == 0 else f"{main.name} LOD{level}"
        texture = scene_sync.load_texture_image(f"{name} baked", message.payloads[4],
                                                f"{settings.previews_folder}/{job}")
        uvs = decode_array(message, 3)
        if level == 0:
            scene_sync.apply_finished_mesh(main, vertices, faces, colours, uvs, texture, finish_job=job)
        else:
            scene_sync.apply_lod(main, level, vertices, faces, colours, uvs, texture, scene.iso3d_finish.lod_layout)
        state.lod_levels = max(state.lod_levels, level)

    def _on_done(self, context, settings, message) -> None:
        artifacts = {item.get("name", ""): item.get("path", "") for item in message.get("artifacts")
                     if isinstance(item, dict)}
        for scene in _job_scenes(message.get("job")):
            state = scene.iso3d_job
            newly_done = state.state != "done"  # not a replay of a job this scene has already seen end
            if newly_done:
                self.undo_reasons.append(f"{state.job_kind or 'job'} done")
                what = f" '{state.object_name}'" if state.object_name and state.job_kind != "preview" else ""
                self.announcements.append(("INFO", f"Isotropic3D: {state.job_kind or 'job'}{what} done"))
            state.state, state.eta, state.position = "done", 0.0, 0
            state.step = state.total
            state.artifacts = json.dumps(artifacts)
            glb = artifacts.get("asset.glb") or next((p for n, p in artifacts.items() if n.endswith(".glb")), "")
            obj = bpy.data.objects.get(state.object_name) if state.object_name else None
            if obj is not None and glb:
                obj["iso3d_glb"] = glb
            if obj is not None and state.job_kind == "finish":
                from . import scene_sync

                scene_sync.remove_lods(obj, state.lod_levels)  # a re-run with fewer LODs drops the extra ones
            if (obj is not None and state.job_kind == "generate" and newly_done and scene.iso3d_finish.after_generate
                    and FINISH_JOB_PROPERTY not in obj):  # not again on a replay of a job already finished
                self._finish_after_generate(context, settings, scene, obj, message.get("job"))

    def _finish_after_generate(self, context, settings: SessionSettings, scene, obj, generate_job: str) -> None:
        """Finish after Generate: send the finish job for the object that was just generated."""
        from .core.job_settings import finish_settings

        try:
            job_settings = finish_settings(scene.iso3d_finish, generate_job)
        except ValueError as error:
            scene.iso3d_job.last_error = f"Generated, but not finished: {error}"
            return
        self.submit(context, settings, "finish", None, job_settings, obj.name, scene=scene)

    def _on_error(self, context, settings, message) -> None:
        job, code = message.get("job"), message.get("code")
        text = _plain_error(code, message.get("message"))
        scenes = _job_scenes(job) if job else []
        if not scenes:  # an error about no job of ours (or a refused submission): the scene waiting for a reply
            scenes = [s for s in bpy.data.scenes if getattr(s, "iso3d_job", None) and s.iso3d_job.request] or [
                context.scene]
        for scene in scenes:
            state = scene.iso3d_job
            already_failed = state.state == "failed"  # a replay of an old failure is not news
            if code == "not_running" or (job in self.resuming and code != "cancelled"):
                state.last_error = text  # a refused cancel or resume: the job stays as it was
                continue
            if code == "cancelled":  # what the artist asked for: a state, not an error
                state.state, state.last_error, state.eta = "cancelled", "", -1.0
                if self.client is not None and job not in self.resuming:
                    self.client.list_jobs()  # the Jobs list learns whether it can be resumed
                continue
            state.last_error = text
            if code == "unknown_job" or state.request:
                state.state, state.request = "failed", ""
            elif job:
                state.state = "failed"
            if state.state == "failed" and not already_failed:
                self.announcements.append(("ERROR", f"Isotropic3D: {state.job_kind or 'job'} failed: {text}"))
        if job in self.resuming and code != "cancelled":
            del self.resuming[job]  # answered: refused

    def _on_pong(self, context, settings, message) -> None:
        pass


def _view_layer(context, scene):
    return context.view_layer if context.scene == scene and context.view_layer else scene.view_layers[0]


def _active_collection(context, scene):
    """Where new results go: the artist's active collection (the Outliner's highlighted one) of that scene."""
    view_layer = _view_layer(context, scene)
    return view_layer.active_layer_collection.collection if view_layer is not None else scene.collection


def _collection(scene, name: str):
    collection = bpy.data.collections.get(name)
    if collection is None:
        collection = bpy.data.collections.new(name)
    if collection.name not in scene.collection.children:
        scene.collection.children.link(collection)
    return collection


SESSION = Session()
