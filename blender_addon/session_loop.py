"""What drives the session in the UI: a ``bpy.app.timers`` callback that drains it with the preferences read
at each tick (``preferences.session_settings``), and the file-load and undo/redo handlers. The session itself never
reads the preferences: this module, an operator or a test hands them over."""

import bpy

from .preferences import session_settings
from .session import SESSION


def _redraw_sidebars() -> None:
    window_manager = bpy.context.window_manager
    for window in getattr(window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def _tick():
    """The UI timer: drain, redraw the sidebar when something changed, come back soon while a job runs."""
    try:
        applied = SESSION.drain(bpy.context, session_settings(bpy.context))
        if applied or SESSION.client is not None:
            _redraw_sidebars()
    except Exception as error:  # noqa: BLE001 - a timer that raises is unregistered for good
        print(f"Isotropic3D: {error}")
    return 0.1 if SESSION.has_work() else 1.0


@bpy.app.handlers.persistent
def _on_load_post(*_args):
    SESSION.attached.clear()  # a new file: its unfinished jobs are attached on the next drain
    SESSION.job_states.clear()  # its own job states are in it


@bpy.app.handlers.persistent
def _on_undo_redo(*_args):
    SESSION.restore_job_states()


_UNDO_HANDLERS = ("undo_post", "redo_post")


def register():
    if _on_load_post not in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.append(_on_load_post)
    for name in _UNDO_HANDLERS:
        if _on_undo_redo not in getattr(bpy.app.handlers, name):
            getattr(bpy.app.handlers, name).append(_on_undo_redo)
    if not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=0.5, persistent=True)


def unregister():
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    if _on_load_post in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load_post)
    for name in _UNDO_HANDLERS:
        if _on_undo_redo in getattr(bpy.app.handlers, name):
            getattr(bpy.app.handlers, name).remove(_on_undo_redo)
    SESSION.shutdown()
