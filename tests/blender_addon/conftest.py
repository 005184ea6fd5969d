import pytest


@pytest.fixture
def registered_addon(tmp_path):
    """The extension registered in this bpy process on an empty file; yields its preferences."""
    bpy = pytest.importorskip("bpy")
    import blender_addon

    bpy.ops.wm.read_factory_settings(use_empty=True)
    addon = bpy.context.preferences.addons.new()
    addon.module = blender_addon.__name__
    blender_addon.register()
    try:
        yield bpy.context.preferences.addons[blender_addon.__name__].preferences
    finally:
        blender_addon.unregister()
        bpy.context.preferences.addons.remove(addon)
