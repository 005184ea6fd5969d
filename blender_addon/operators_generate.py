"""Operators of the generation panel: Preview Views, Generate, Cancel, Resume, Connect/Attach, Start/Stop local
backend.

Each one only queues work on the session (never waits for the backend) and reports every problem in plain words.
"""

import json

import bpy

from .core.addresses import AddressError, is_loopback
from .image_input import ImageInputError, prepare_input
from .core.job_settings import changed_settings
from .core.local_backend import LocalBackendError, serve_command
from .preferences import addon_preferences, backend_address, local_data_folder, session_settings
from .session import SESSION


def preview_settings(scene) -> dict:
    """The ``preview`` job's settings: only what the artist changed (job_settings)."""
    return changed_settings(scene, "preview")


def generate_settings(scene) -> dict:
    """The ``generate`` job's settings (wire keys ``section.name``): what the artist changed, then the advanced
    JSON options over them; ValueError when the advanced options are not valid JSON."""
    settings = scene.iso3d_generate
    result = changed_settings(scene, "generate")
    if settings.options.strip():
        try:
            extra = json.loads(settings.options)
        except ValueError as error:
            raise ValueError(f"The advanced options are not valid JSON: {error}") from None
        if not isinstance(extra, dict):
            raise ValueError('The advanced options must be a JSON object like {"mesh.resolution": 128}')
        result.update(extra)
    return result


def _unique_object_name(base: str) -> str:
    name, index = base, 2
    while name in bpy.data.objects:
        name, index = f"{base} {index}", index + 1
    return name


def busy_reason(scene) -> str:
    """Why a new job cannot start in ``scene`` now ("" when it can): one job per scene at a time, so that no job
    ever runs unseen (its progress, Cancel and results all belong to the scene's one job state)."""
    state = scene.iso3d_job
    if scene.name in SESSION.preparing:
        return "The input image is still being prepared; cancel it to send another"
    if state.request:
        return "The last job was not accepted yet (is the backend running?); cancel it to send another"
    if state.active:
        return f"A {state.job_kind or 'job'} is running in this scene; wait for it or cancel it"
    return ""


class _Submit:
    kind = ""
    bl_options = {"UNDO"}  # the job state it sets is one undo step (and survives undo: see session)

    @classmethod
    def poll(cls, context):
        if context.scene is None or not hasattr(context.scene, "iso3d_generate"):
            return False
        reason = busy_reason(context.scene)
        if reason:
            cls.poll_message_set(reason)
        return not reason

    def execute(self, context):
        settings = context.scene.iso3d_generate
        try:
            job_settings = (preview_settings(context.scene) if self.kind == "preview"
                            else generate_settings(context.scene))
            prepared = prepare_input(context, settings)
            object_name = ""
            if self.kind == "generate":
                target = settings.result_object
                object_name = target.name if target is not None else _unique_object_name(f"Isotropic3D {prepared.name}")
            SESSION.submit_when_ready(context, session_settings(context), self.kind, prepared, job_settings,
                                      object_name)
        except (ImageInputError, ValueError, ConnectionError) as error:  # ConnectionRefused (preferences) is one
            context.scene.iso3d_job.last_error = str(error)
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        waiting = context.scene.name in SESSION.preparing
        self.report({"INFO"}, f"Isotropic3D: {self.kind} " + ("is preparing its image" if waiting else
                                                               f"sent to {SESSION.address}"))
        return {"FINISHED"}


class ISO3D_OT_preview_views(_Submit, bpy.types.Operator):
    """Send the image to the backend and show its four multi-view previews around the 3D cursor"""

    bl_idname = "iso3d.preview_views"
    bl_label = "Preview Views"
    kind = "preview"


class ISO3D_OT_generate(_Submit, bpy.types.Operator):
    """Generate a 3D object from the image; its mesh streams into the scene as it grows"""

    bl_idname = "iso3d.generate"
    bl_label = "Generate"
    kind = "generate"


class ISO3D_OT_generate_from_seed(_Submit, bpy.types.Operator):
    """Generate a 3D object from the same image with the seed of the preview just shown"""

    bl_idname = "iso3d.generate_from_seed"
    bl_label = "Generate from this seed"
    kind = "generate"

    @classmethod
    def poll(cls, context):
        state = getattr(context.scene, "iso3d_job", None)
        if state is None or state.job_kind != "preview" or state.state != "done":
            cls.poll_message_set("Make a preview first")
            return False
        return super().poll(context)

    def execute(self, context):
        context.scene.iso3d_generate.seed = context.scene.iso3d_job.seed
        return super().execute(context)


class ISO3D_OT_cancel(bpy.types.Operator):
    """Cancel a job on the backend (default: this scene's; a job not yet accepted is withdrawn)"""

    bl_idname = "iso3d.cancel"
    bl_label = "Cancel"
    bl_options = {"UNDO"}

    job: bpy.props.StringProperty(name="Job", description="A job id; empty = this scene's job",
                                  options={"SKIP_SAVE"})

    def execute(self, context):
        try:
            SESSION.cancel(context, session_settings(context), self.job.strip())
        except (ValueError, ConnectionError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Isotropic3D: cancelling {self.job.strip() or context.scene.iso3d_job.job_kind or 'the job'}")
        return {"FINISHED"}


class ISO3D_OT_resume(bpy.types.Operator):
    """Resume a cancelled generate job from the step it saved; its meshes stream into its own object again"""

    bl_idname = "iso3d.resume"
    bl_label = "Resume"
    bl_options = {"UNDO"}

    job: bpy.props.StringProperty(name="Job", description="A cancelled generate job's id; empty = this scene's job",
                                  options={"SKIP_SAVE"})

    def execute(self, context):
        state = context.scene.iso3d_job
        job = self.job.strip() or state.job_id
        if job != state.job_id and busy_reason(context.scene):
            self.report({"ERROR"}, busy_reason(context.scene))  # it would leave the running job unseen
            return {"CANCELLED"}
        try:
            SESSION.resume(context, session_settings(context), job)
        except (ValueError, ConnectionError) as error:
            state.last_error = str(error)
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Isotropic3D: resuming {state.object_name or job}")
        return {"FINISHED"}


class ISO3D_OT_connect(bpy.types.Operator):
    """Connect to the backend (again) and attach to a job: the given one, else the scene's"""

    bl_idname = "iso3d.connect"
    bl_label = "Connect / Attach"
    bl_options = {"UNDO"}

    job: bpy.props.StringProperty(name="Job", description="A job id to attach to; empty = the scene's job",
                                  options={"SKIP_SAVE"})

    def execute(self, context):
        state = context.scene.iso3d_job
        job = self.job.strip() or state.job_id
        if job != state.job_id and busy_reason(context.scene):
            self.report({"ERROR"}, busy_reason(context.scene))  # it would leave the running job unseen
            return {"CANCELLED"}
        try:
            settings = session_settings(context)
            SESSION.connect(context, settings, force=True)
            if job:
                SESSION.attach(context, settings, job)
        except ConnectionError as error:
            context.scene.iso3d_job.last_error = str(error)
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        context.scene.iso3d_job.last_error = ""
        self.report({"INFO"}, f"Isotropic3D: connecting to {SESSION.address}" + (f", attaching to {job}" if job else ""))
        return {"FINISHED"}


class ISO3D_OT_refresh_jobs(bpy.types.Operator):
    """Ask the backend for its recent jobs (the Jobs list)"""

    bl_idname = "iso3d.refresh_jobs"
    bl_label = "Refresh jobs"

    def execute(self, context):
        try:
            SESSION.refresh_jobs(context, session_settings(context))
        except ConnectionError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        return {"FINISHED"}


class ISO3D_OT_start_local_backend(bpy.types.Operator):
    """Start `iso3d serve` on this machine at the backend address from the preferences"""

    bl_idname = "iso3d.start_local_backend"
    bl_label = "Start local backend"

    def execute(self, context):
        preferences = addon_preferences(context)
        address = backend_address(context)
        try:
            if not is_loopback(address):
                raise LocalBackendError(f"A local backend binds this machine only; the address {address} is not "
                                        "loopback (use tcp://127.0.0.1:PORT)")
            command = serve_command(
                preferences.local_python if preferences else "", preferences.local_model if preferences else "",
                preferences.local_device if preferences else "auto", address, local_data_folder(context),
            )
            SESSION.local_backend.start(command, local_data_folder(context))
            SESSION.connect(context, session_settings(context), force=True)
        except (LocalBackendError, AddressError, OSError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Isotropic3D: starting a local backend at {address}")
        return {"FINISHED"}


class ISO3D_OT_stop_local_backend(bpy.types.Operator):
    """Stop the backend that this Blender started (its unfinished jobs resume when it starts again)"""

    bl_idname = "iso3d.stop_local_backend"
    bl_label = "Stop local backend"

    def execute(self, context):
        if not SESSION.local_backend.running:
            self.report({"WARNING"}, "No local backend started by this Blender is running")
            return {"CANCELLED"}
        SESSION.local_backend.stop()
        self.report({"INFO"}, "Isotropic3D: local backend stopped")
        return {"FINISHED"}


class ISO3D_OT_report(bpy.types.Operator):
    """Show a message of the add-on in the status bar and the Info log (jobs that end report through it)"""

    bl_idname = "iso3d.report"
    bl_label = "Isotropic3D report"
    bl_options = {"INTERNAL"}

    level: bpy.props.EnumProperty(items=[("INFO", "Info", ""), ("WARNING", "Warning", ""), ("ERROR", "Error", "")])
    message: bpy.props.StringProperty()

    def execute(self, context):
        self.report({self.level}, self.message)
        return {"FINISHED"}


CLASSES = (ISO3D_OT_preview_views, ISO3D_OT_generate, ISO3D_OT_generate_from_seed, ISO3D_OT_cancel, ISO3D_OT_resume,
           ISO3D_OT_connect,
           ISO3D_OT_refresh_jobs, ISO3D_OT_start_local_backend, ISO3D_OT_stop_local_backend, ISO3D_OT_report)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
