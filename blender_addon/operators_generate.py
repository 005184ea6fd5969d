"""Operators of the generation panel: Preview Views, Generate, Cancel, Connect/Attach, Start/Stop local backend.

Each one only queues work on the session (never waits for the backend) and reports every problem in plain words.
"""

import json

import bpy

from .addresses import AddressError, is_loopback
from .image_input import ImageInputError, input_image_png
from .local_backend import LocalBackendError, serve_command
from .preferences import ConnectionRefused, addon_preferences, backend_address, local_data_folder
from .session import SESSION


def preview_settings(settings) -> dict:
    return {"steps": settings.preview_steps, "seed": settings.seed, "guidance": float(settings.guidance),
            "elevation": float(settings.elevation)}


def generate_settings(settings) -> dict:
    """The ``generate`` job's settings; ValueError when the advanced options are not valid JSON."""
    result = {"preset": settings.preset, "seed": settings.seed}
    if settings.steps > 0:
        result["steps"] = settings.steps
    if settings.mesh_every > 0:
        result["mesh_every"] = settings.mesh_every
    options = {}
    if settings.options.strip():
        try:
            options = json.loads(settings.options)
        except ValueError as error:
            raise ValueError(f"The advanced options are not valid JSON: {error}") from None
        if not isinstance(options, dict):
            raise ValueError('The advanced options must be a JSON object like {"mesh.resolution": 128}')
    if settings.sds_guidance > 0:
        options.setdefault("guidance.guidance_scale", float(settings.sds_guidance))
    if options:
        result["options"] = options
    return result


def _unique_object_name(base: str) -> str:
    name, index = base, 2
    while name in bpy.data.objects:
        name, index = f"{base} {index}", index + 1
    return name


class _Submit:
    kind = ""

    @classmethod
    def poll(cls, context):
        return context.scene is not None and hasattr(context.scene, "iso3d_generate")

    def execute(self, context):
        settings = context.scene.iso3d_generate
        try:
            image_png, image_name = input_image_png(context, settings)
            job_settings = preview_settings(settings) if self.kind == "preview" else generate_settings(settings)
            object_name = ""
            if self.kind == "generate":
                target = settings.result_object
                object_name = target.name if target is not None else _unique_object_name(f"Isotropic3D {image_name}")
            SESSION.submit(context, self.kind, image_png, job_settings, object_name)
        except (ImageInputError, ConnectionRefused, ValueError, ConnectionError) as error:
            context.scene.iso3d_job.last_error = str(error)
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Isotropic3D: {self.kind} sent to {SESSION.address}")
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


class ISO3D_OT_cancel(bpy.types.Operator):
    """Cancel the current job on the backend"""

    bl_idname = "iso3d.cancel"
    bl_label = "Cancel"

    def execute(self, context):
        try:
            SESSION.cancel(context)
        except (ValueError, ConnectionRefused, ConnectionError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Isotropic3D: cancelling job {context.scene.iso3d_job.job_id}")
        return {"FINISHED"}


class ISO3D_OT_connect(bpy.types.Operator):
    """Connect to the backend (again) and attach to a job: the given one, else the scene's"""

    bl_idname = "iso3d.connect"
    bl_label = "Connect / Attach"

    job: bpy.props.StringProperty(name="Job", description="A job id to attach to; empty = the scene's job")

    def execute(self, context):
        try:
            SESSION.connect(context, force=True)
            job = self.job.strip() or context.scene.iso3d_job.job_id
            if job:
                SESSION.attach(context, job)
        except (ConnectionRefused, ConnectionError) as error:
            context.scene.iso3d_job.last_error = str(error)
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        context.scene.iso3d_job.last_error = ""
        self.report({"INFO"}, f"Isotropic3D: connecting to {SESSION.address}" + (f", attaching to {job}" if job else ""))
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
            SESSION.connect(context, force=True)
        except (LocalBackendError, ConnectionRefused, AddressError, OSError) as error:
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


CLASSES = (ISO3D_OT_preview_views, ISO3D_OT_generate, ISO3D_OT_cancel, ISO3D_OT_connect,
           ISO3D_OT_start_local_backend, ISO3D_OT_stop_local_backend)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
