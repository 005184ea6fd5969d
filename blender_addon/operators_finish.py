"""The Finish operator: turn a generated object into a usable asset (face budget, UV map + baked texture, LODs).

It sends a ``finish`` job for the generate job that made the object (its ``iso3d_job`` property); the backend
re-runs the finishing stages from that job's saved field in seconds (no SDS again), and the session replaces the
object's mesh and material in place when the result streams back. Running it again with other settings is the
"Re-run".
"""

import bpy

from .core.job_settings import finish_settings
from .preferences import session_settings
from .scene_sync import FINISH_JOB_PROPERTY, JOB_PROPERTY, LOD_OF_PROPERTY
from .session import SESSION


def finish_target(context):
    """The generated object the Finish section works on: the active object, or the object a selected LOD
    belongs to; None when the active object was not generated."""
    obj = context.active_object
    if obj is not None and obj.get(LOD_OF_PROPERTY):
        obj = bpy.data.objects.get(obj[LOD_OF_PROPERTY])
    if obj is None or obj.type != "MESH" or not obj.get(JOB_PROPERTY):
        return None
    return obj


class ISO3D_OT_finish(bpy.types.Operator):
    """Finish the generated object: decimate to the face budget, unwrap UVs, bake the albedo texture, make LODs.
    Runs on the backend from the saved result in seconds; the object's mesh and material are replaced in place"""

    bl_idname = "iso3d.finish"
    bl_label = "Finish"
    bl_options = {"UNDO"}

    @classmethod
    def poll(cls, context):
        return context.scene is not None and hasattr(context.scene, "iso3d_finish")

    def execute(self, context):
        scene = context.scene
        obj = finish_target(context)
        try:
            if obj is None:
                raise ValueError("Select an object made by Generate to finish it")
            if scene.iso3d_job.active:
                raise ValueError(f"Wait for the current {scene.iso3d_job.job_kind or 'job'} to end (or cancel it) "
                                 "before finishing")
            settings = finish_settings(scene.iso3d_finish, obj[JOB_PROPERTY])
            SESSION.submit(context, session_settings(context), "finish", None, settings, obj.name)
        except (ValueError, ConnectionError) as error:
            scene.iso3d_job.last_error = str(error)
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        again = "again " if obj.get(FINISH_JOB_PROPERTY) else ""
        self.report({"INFO"}, f"Isotropic3D: finishing '{obj.name}' {again}({settings['faces']} faces, "
                              f"{settings['texture']} px texture, {len(settings['lods'])} LODs)")
        return {"FINISHED"}


CLASSES = (ISO3D_OT_finish,)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
