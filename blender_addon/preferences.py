"""Add-on preferences: the output folder for rendered training views (more settings join as features land)."""

import os

import bpy


def default_output_folder() -> str:
    """The extension's user folder (``extension_path_user``) or, for a legacy install, ~/isotropic3d."""
    try:
        return bpy.utils.extension_path_user(__package__, path="training_views", create=False)
    except (ValueError, AttributeError):  # not installed as an extension (tests, legacy add-on)
        return os.path.join(os.path.expanduser("~"), "isotropic3d", "training_views")


def output_folder(context) -> str:
    """The output folder set in the preferences, or the default when empty or the add-on is not registered."""
    addon = context.preferences.addons.get(__package__)
    folder = addon.preferences.output_folder if addon is not None else ""
    return bpy.path.abspath(folder) if folder else default_output_folder()


class Isotropic3DPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    output_folder: bpy.props.StringProperty(
        name="Output folder",
        description="Where rendered training views go (one folder per object); empty = the extension's user folder",
        subtype="DIR_PATH",
        default="",
    )

    def draw(self, context):
        self.layout.prop(self, "output_folder")


def register():
    bpy.utils.register_class(Isotropic3DPreferences)


def unregister():
    bpy.utils.unregister_class(Isotropic3DPreferences)
