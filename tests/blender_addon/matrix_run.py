"""Run by test_version_matrix.py inside one bpy release's own venv (its Python, its bpy): install the built
extension zip into a fresh user folder the way Blender's Install from Disk does, then a preview and a generate
against a real tiny backend, and a training-view renderer set up (its world). Prints one ``MATRIX {json}`` line.

    python matrix_run.py ZIP BACKEND_ADDRESS IMAGE OUT_FOLDER        (BLENDER_USER_RESOURCES set by the caller)
    python matrix_run.py --broken-wheel WHEEL_DIR REPO_ROOT IMAGE     (a pyzmq that cannot load: said in words)

Timers never fire in a bpy module, so the session is drained here by hand, as the suite's other tests do.
"""

import importlib
import json
import os
import sys
import time

import bpy

SMALL = {"phases.resolution_before": 24, "phases.resolution_after": 24, "mesh.resolution": 32,
         "mesh.preview_resolution": 24, "mesh.density_threshold": 2.0}


def drain_until(session, preferences_module, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session.drain(bpy.context, preferences_module.session_settings(bpy.context))
        state = bpy.context.scene.iso3d_job
        if predicate(state):
            return state
        time.sleep(0.05)
    state = bpy.context.scene.iso3d_job
    raise TimeoutError(f"{state.job_kind} {state.state} {state.phase} {state.step}/{state.total}: {state.last_error}")


def installed_run(zip_path, address, image, out):
    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    package = importlib.import_module("bl_ext.user_default.isotropic3d")
    session = importlib.import_module("bl_ext.user_default.isotropic3d.session").SESSION
    preferences_module = importlib.import_module("bl_ext.user_default.isotropic3d.preferences")
    import zmq  # the wheel Blender chose from the zip, loaded from the extension's own site-packages

    preferences = bpy.context.preferences.addons[package.__name__].preferences
    preferences.backend_address, preferences.previews_folder = address, f"{out}/previews"
    settings = bpy.context.scene.iso3d_generate
    settings.image_source, settings.image_path, settings.preview_steps, settings.preset = "FILE", image, 2, "tiny"
    bpy.ops.iso3d.preview_views()
    preview = drain_until(session, preferences_module, lambda s: s.state in ("done", "failed") and not s.request, 240)
    previews = sum(1 for image in bpy.data.images if image.name.startswith("Isotropic3D preview")
                   and image.name[-1].isdigit())
    preview_state = preview.state
    settings.steps, settings.mesh_every, settings.options = 2, 0, json.dumps(SMALL)
    bpy.ops.iso3d.generate()
    generate = drain_until(session, preferences_module, lambda s: s.state in ("done", "failed") and not s.request, 300)
    obj = bpy.data.objects.get(generate.object_name)
    renderer_module = importlib.import_module("bl_ext.user_default.isotropic3d.dataset_render")
    plan = importlib.import_module("bl_ext.user_default.isotropic3d.core.render_plan")
    renderer = renderer_module.TrainingViewRenderer(plan.RenderSettings(resolution=32, samples=1, denoise=False),
                                                    bpy.context.scene)
    world_nodes = len(bpy.context.scene.world.node_tree.nodes)
    renderer.close()
    outcome = {"install": sorted(result), "package": package.__file__, "zmq": zmq.__file__,
            "preview": preview_state, "preview_images": previews, "generate": generate.state,
            "error": generate.last_error, "faces": len(obj.data.polygons) if obj is not None else 0,
            "world_nodes": world_nodes}
    bpy.ops.preferences.addon_disable(module=package.__name__)  # unregister as Blender does on disabling
    return outcome


def broken_wheel_run(wheel_dir, repo_root, image):
    """A pyzmq built for another Python first on the path: the add-on says so in words, no traceback."""
    sys.path[:0] = [wheel_dir, repo_root]
    import blender_addon
    from blender_addon.core import client

    bpy.ops.wm.read_factory_settings(use_empty=True)
    addon = bpy.context.preferences.addons.new()
    addon.module = blender_addon.__name__
    blender_addon.register()
    settings = bpy.context.scene.iso3d_generate
    settings.image_source, settings.image_path = "FILE", image
    try:
        bpy.ops.iso3d.preview_views()
        reported = ""
    except RuntimeError as error:
        reported = str(error)
    return {"problem": client.zmq_problem(), "reported": reported, "last_error": bpy.context.scene.iso3d_job.last_error}


if __name__ == "__main__":
    if sys.argv[1] == "--broken-wheel":
        outcome = broken_wheel_run(*sys.argv[2:5])
    else:
        outcome = installed_run(*sys.argv[1:5])
    print("MATRIX " + json.dumps(outcome), flush=True)
    # bpy 4.2 as a Python module crashes (SIGSEGV) in its own interpreter teardown once an add-on has registered its
    # classes, even after unregistering them; the work above is complete and reported by then. Leave without it.
    sys.stderr.flush()
    os._exit(0)
