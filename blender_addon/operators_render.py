"""Operator "Render training views": the selected mesh objects through the training-data renderer.

Renders in a temporary scene on copies of the objects (the user's scene and objects are never changed), with the
panel's settings, into the output folder from the preferences: one folder per object, the same files as
``iso3d-render`` writes. In the UI it runs modally, one view per timer tick, with progress in the status bar and
Esc to cancel (a cancelled object leaves no folder); in background mode (no event loop) it runs to completion.
"""

import os
import re

import bpy

from .dataset_render import ObjectRenderError, TrainingViewRenderer
from .preferences import output_folder
from .core.atomic_files import write_problem
from .core.render_plan import RenderSettingsError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def object_folder_name(name: str) -> str:
    """A folder name for a Blender object name (unsafe characters become underscores)."""
    return _UNSAFE.sub("_", name).strip("._") or "object"


def _selected_meshes(context):
    return [obj for obj in context.selected_objects if obj.type == "MESH"]


def _render_jobs(settings, groups, out_root, report):
    """Yields (views done, views total) over all groups; each group is (object id, [objects])."""
    scene = bpy.data.scenes.new("Isotropic3D training render")
    renderer = None
    try:
        renderer = TrainingViewRenderer(settings, scene, owns_scene=True)
        total = settings.views_per_object * len(groups)
        done = 0
        for object_id, objects in groups:
            loaded = renderer.copy_objects(objects)
            try:
                for views_done, _ in renderer.render(loaded, object_id, out_root, overwrite=True):
                    yield done + views_done, total
            except ObjectRenderError as error:
                report({"WARNING"}, f"{object_id}: {error}")
            finally:
                renderer.discard(loaded)
            done += settings.views_per_object
    finally:
        try:
            os.rmdir(os.path.join(out_root, ".partial"))  # the staging folder, when nothing is left in it
        except OSError:
            pass
        if renderer is not None:
            renderer.close()
        elif scene.name in bpy.data.scenes:
            bpy.data.scenes.remove(scene)


class ISO3D_OT_render_training_views(bpy.types.Operator):
    """Render the fixed and random training views of the selected mesh objects into the output folder"""

    bl_idname = "iso3d.render_training_views"
    bl_label = "Render Training Views"
    bl_options = {"REGISTER"}

    _timer = None
    _jobs = None

    @classmethod
    def poll(cls, context):
        if not _selected_meshes(context):
            cls.poll_message_set("Select one or more mesh objects")
            return False
        return True

    def _start(self, context):
        properties = context.scene.iso3d_render
        try:
            settings = properties.to_settings()
        except RenderSettingsError as error:
            self.report({"ERROR"}, str(error))
            return False
        meshes = _selected_meshes(context)
        if properties.grouping == "TOGETHER":
            active = context.active_object if context.active_object in meshes else meshes[0]
            groups = [(object_folder_name(active.name), meshes)]
        else:
            groups = [(object_folder_name(obj.name), [obj]) for obj in meshes]
        self.out_root = output_folder(context)
        problem = write_problem(self.out_root, folder=True)  # said now, not as a traceback after the first render
        if problem is not None:
            self.report({"ERROR"}, f"Output folder {self.out_root} (Preferences > Add-ons > Isotropic3D): {problem}")
            return False
        os.makedirs(self.out_root, exist_ok=True)
        self._count = len(groups)
        self._jobs = _render_jobs(settings, groups, self.out_root, self.report)
        return True

    def execute(self, context):
        if not self._start(context):
            return {"CANCELLED"}
        try:
            for _ in self._jobs:
                pass
        except (RenderSettingsError, OSError) as error:  # OSError: the disk filled, the folder went away
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Rendered {self._count} object(s) into {self.out_root}")
        return {"FINISHED"}

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        if not self._start(context):
            return {"CANCELLED"}
        window_manager = context.window_manager
        self._timer = window_manager.event_timer_add(0.05, window=context.window)
        window_manager.progress_begin(0, 1)
        window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC":
            self._finish(context)
            self.report({"WARNING"}, "Training-view render cancelled")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            done, total = next(self._jobs)
        except StopIteration:
            self._finish(context)
            self.report({"INFO"}, f"Rendered {self._count} object(s) into {self.out_root}")
            return {"FINISHED"}
        except (RenderSettingsError, OSError) as error:
            self._finish(context)
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        context.window_manager.progress_update(done / max(total, 1))
        context.workspace.status_text_set(f"Isotropic3D: rendering training views {done}/{total} (Esc cancels)")
        return {"RUNNING_MODAL"}

    def _finish(self, context):
        if self._jobs is not None:
            self._jobs.close()
        window_manager = context.window_manager
        if self._timer is not None:
            window_manager.event_timer_remove(self._timer)
        window_manager.progress_end()
        context.workspace.status_text_set(None)


def register():
    bpy.utils.register_class(ISO3D_OT_render_training_views)


def unregister():
    bpy.utils.unregister_class(ISO3D_OT_render_training_views)
