"""Add-on preferences: the backend address, a local backend to start, CURVE keys for a remote backend, and the
output folders; ``session_settings`` reads them into the plain values the session receives (the connection rule
itself is ``core.connection``)."""

import os

import bpy

from .core.addresses import DEFAULT_ADDRESS
from .core.connection import SessionSettings


def _user_folder(name: str) -> str:
    """The extension's user folder ``name`` (``extension_path_user``) or, for a legacy install, ~/isotropic3d/name."""
    try:
        return bpy.utils.extension_path_user(__package__, path=name, create=False)
    except (ValueError, AttributeError):  # not installed as an extension (tests, legacy add-on)
        return os.path.join(os.path.expanduser("~"), "isotropic3d", name)


def default_output_folder() -> str:
    return _user_folder("training_views")


def addon_preferences(context):
    """The add-on's preferences, or None when the add-on is not registered under its package name."""
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None else None


def output_folder(context) -> str:
    """The output folder set in the preferences, or the default when empty or the add-on is not registered."""
    preferences = addon_preferences(context)
    folder = preferences.output_folder if preferences is not None else ""
    return bpy.path.abspath(folder) if folder else default_output_folder()


def previews_folder(context) -> str:
    """Where streamed preview images are written before they are loaded as Image datablocks."""
    preferences = addon_preferences(context)
    folder = preferences.previews_folder if preferences is not None else ""
    return bpy.path.abspath(folder) if folder else _user_folder("previews")


def local_data_folder(context) -> str:
    preferences = addon_preferences(context)
    folder = preferences.local_data_folder if preferences is not None else ""
    return bpy.path.abspath(folder) if folder else _user_folder("backend_data")


def backend_address(context) -> str:
    preferences = addon_preferences(context)
    return (preferences.backend_address.strip() if preferences is not None else "") or DEFAULT_ADDRESS


def session_settings(context) -> SessionSettings:
    """The preferences the session works with, read now (the session receives them; it never reads this module)."""
    preferences = addon_preferences(context)

    def key_file(name: str) -> str:
        path = getattr(preferences, name) if preferences is not None else ""
        return bpy.path.abspath(path) if path else ""

    return SessionSettings(
        address=backend_address(context), server_public_key=key_file("server_public_key"),
        client_secret_key=key_file("client_secret_key"),
        online_access=getattr(bpy.app, "online_access", True),  # Blender < 4.2 has no offline mode
        previews_folder=previews_folder(context), client_name=f"blender {bpy.app.version_string}",
    )


class Isotropic3DPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_address: bpy.props.StringProperty(
        name="Backend address",
        description="ZeroMQ address of the Isotropic3D backend (`iso3d serve --bind ...`)",
        default=DEFAULT_ADDRESS,
    )
    # -- a backend started by the add-on on this machine --
    local_python: bpy.props.StringProperty(
        name="Python",
        description="Python with the backend installed (runs `PYTHON -m backend.cli serve`); empty = the `iso3d` "
        "command on PATH",
        subtype="FILE_PATH",
        default="",
    )
    local_model: bpy.props.StringProperty(
        name="Model",
        description="'tiny' (test-size, no weights), or the path of isotropic3d.ckpt; empty = the backend's default",
        default="",
    )
    local_device: bpy.props.StringProperty(
        name="Device", description="auto (CUDA if available), cpu, cuda, cuda:1, ...", default="auto"
    )
    local_data_folder: bpy.props.StringProperty(
        name="Data folder",
        description="Where the local backend keeps its jobs; empty = the extension's user folder",
        subtype="DIR_PATH",
        default="",
    )
    # -- a remote backend --
    server_public_key: bpy.props.StringProperty(
        name="Server public key",
        description="The backend's CURVE public certificate (server.key), needed for a non-loopback address",
        subtype="FILE_PATH",
        default="",
    )
    client_secret_key: bpy.props.StringProperty(
        name="Client secret key",
        description="This client's CURVE secret certificate (blender.key_secret)",
        subtype="FILE_PATH",
        default="",
    )
    # -- outputs --
    output_folder: bpy.props.StringProperty(
        name="Output folder",
        description="Where rendered training views go (one folder per object); empty = the extension's user folder",
        subtype="DIR_PATH",
        default="",
    )
    previews_folder: bpy.props.StringProperty(
        name="Previews folder",
        description="Where streamed preview images are saved; empty = the extension's user folder",
        subtype="DIR_PATH",
        default="",
    )

    def draw(self, context):
        from .session import SESSION

        layout = self.layout
        layout.prop(self, "backend_address")
        box = layout.box()
        box.label(text="Local backend", icon="CONSOLE")
        box.prop(self, "local_python")
        box.prop(self, "local_model")
        box.prop(self, "local_device")
        box.prop(self, "local_data_folder")
        row = box.row()
        row.label(text=SESSION.local_backend.status_line())
        row.operator("iso3d.start_local_backend", text="Start")
        row.operator("iso3d.stop_local_backend", text="Stop")
        box = layout.box()
        box.label(text="Remote backend (CURVE keys)", icon="LOCKED")
        box.prop(self, "server_public_key")
        box.prop(self, "client_secret_key")
        layout.prop(self, "output_folder")
        layout.prop(self, "previews_folder")


def register():
    bpy.utils.register_class(Isotropic3DPreferences)


def unregister():
    bpy.utils.unregister_class(Isotropic3DPreferences)
