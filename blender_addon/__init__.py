"""Isotropic3D for Blender: the Blender extension.

register()/unregister() only. bpy is imported lazily (inside these functions and in the modules they load), so
the bpy-free core (``blender_addon.core``: the protocol, the client, the render format, job settings, ...) imports
without Blender.
"""

_MODULES = ("preferences", "render_properties", "properties", "operators_render", "operators_generate", "operators_finish",
            "session_loop", "panels")


def _load_modules():
    import importlib

    return [importlib.import_module(f"{__name__}.{name}") for name in _MODULES]


def register():
    for module in _load_modules():
        module.register()


def unregister():
    for module in reversed(_load_modules()):
        module.unregister()
