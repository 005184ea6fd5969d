"""The add-on's one connection to the backend and the jobs it follows (module-level ``SESSION``).

``drain(context, settings)`` polls the client (never blocks) and applies each message to the scene that owns its job
(the handlers: ``session_messages``) through ``scene_sync``: preview views -> Image datablocks and image empties around
the job's target; ``mesh`` -> one object replaced in place (a ``finish`` job's textured meshes: the object's mesh +
baked material, then its LODs); ``done`` -> the GLB path on that object; progress and errors -> ``scene.iso3d_job``.
In the UI a ``bpy.app.timers`` callback calls it (``session_loop``); in background mode (tests, ``bpy.app.background``)
timers never fire, so it is called directly. The session receives the preferences it needs with each call
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

import time

import bpy

from .core.connection import SessionSettings, connection_target
from .core.local_backend import LocalBackend
from .session_messages import SessionMessages, job_scenes

HEARTBEAT_SECONDS = 2.0
# A connected backend answers every heartbeat ping at once (its socket loop never waits for the GPU); this long
# without any reply (3 heartbeats, plus slack for a loaded machine) means it is gone even when the transport
# saw no disconnect (an unplugged network, a frozen machine).
SILENCE_LOST_SECONDS = 3 * HEARTBEAT_SECONDS + 2.0
ATTACH_RETRY_SECONDS = 5.0
NO_ANSWER_SECONDS = 10.0


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


class Session(SessionMessages):
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
        state.last_error, state.mesh_updates, state.artifacts, state.lod_levels, state.note = "", 0, "", 0, ""
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
            state.job_id, state.state, state.request, state.last_error, state.note = job, "", "", "", ""
            state.phase, state.step, state.total, state.eta, state.mesh_updates = "", 0, 0, -1.0, 0
            owner = next((obj for obj in bpy.data.objects if obj.type == "MESH" and job in (
                obj.get(JOB_PROPERTY), obj.get(FINISH_JOB_PROPERTY))), None)
            state.object_name = owner.name if owner is not None else ""
            state.target = tuple(context.scene.cursor.location)

    def refresh_jobs(self, context, settings: SessionSettings) -> None:
        """Ask the backend for its recent jobs (the answer, ``jobs``, fills ``backend_jobs``)."""
        self.connect(context, settings).list_jobs()

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
                for scene in job_scenes(message.get("job")) or [context.scene]:
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


SESSION = Session()
