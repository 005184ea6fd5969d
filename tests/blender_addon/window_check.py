"""A real-window check: Blender (Debian's package, 3.4) under Xvfb with the add-on installed the legacy way, a
generate job from a tiny backend streamed into the viewport, then Finish on the generated object (LODs as
children), and screenshots of the streamed mesh and of the finished, textured one.

    python -m tests.blender_addon.window_check OUT_DIR        # needs: apt-get install blender xvfb python3-zmq

Outside Blender it prepares a legacy add-on copy (the extension plus a ``bl_info``), starts the backend and runs
``xvfb-run blender FILE.blend --python`` on this same file (a file on the command line: no splash screen); inside
Blender it enables the add-on, presses Generate, lets the UI timer drain the stream, saves ``OUT_DIR/window.png``,
presses Finish and, when the textured mesh has streamed in, saves ``OUT_DIR/finished.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

LEGACY_BL_INFO = (
    'bl_info = {"name": "Isotropic3D", "blender": (3, 4, 0), "category": "3D View", '
    '"location": "View3D > Sidebar > Isotropic3D", "description": "legacy copy for the window check"}\n'
)


def outside(out_dir: Path) -> int:
    from tests.helpers.backend import BackendProcess
    from tests.helpers.paths import REPO_ROOT as repo

    out_dir.mkdir(parents=True, exist_ok=True)
    addons = out_dir / "scripts" / "addons"
    shutil.rmtree(addons, ignore_errors=True)
    shutil.copytree(repo / "blender_addon", addons / "isotropic3d", ignore=shutil.ignore_patterns("__pycache__"))
    init = addons / "isotropic3d" / "__init__.py"
    init.write_text(LEGACY_BL_INFO + init.read_text())
    backend = BackendProcess(out_dir / "backend-data").start()
    try:
        settings = {"address": backend.address, "image": str(repo / "examples" / "example.png"),
                    "out": str(out_dir), "addons": str(out_dir / "scripts")}
        environment = dict(os.environ, ISO3D_WINDOW_CHECK=json.dumps(settings))
        empty_file = out_dir / "empty.blend"
        subprocess.run(["blender", "-b", "--factory-startup", "--python-expr",
                        f"import bpy; bpy.ops.wm.save_as_mainfile(filepath={str(empty_file)!r})"],
                       check=True, capture_output=True, timeout=120)
        result = subprocess.run(
            ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "blender", "--factory-startup", str(empty_file),
             "--python", str(Path(__file__).resolve())],
            env=environment, timeout=600, capture_output=True, text=True,
        )
        (out_dir / "blender.log").write_text(result.stdout + result.stderr)
        print((result.stdout + result.stderr)[-3000:])
        return 0 if (out_dir / "window.png").is_file() and (out_dir / "finished.png").is_file() else 1
    finally:
        backend.stop()


def inside() -> None:
    import faulthandler
    import time

    import bpy

    faulthandler.enable()

    settings = json.loads(os.environ["ISO3D_WINDOW_CHECK"])
    sys.path.insert(0, str(Path(settings["addons"]) / "addons"))
    bpy.ops.preferences.addon_enable(module="isotropic3d")
    preferences = bpy.context.preferences.addons["isotropic3d"].preferences
    preferences.backend_address = settings["address"]
    preferences.previews_folder = str(Path(settings["out"]) / "previews")
    for obj in list(bpy.data.objects):
        if obj.type == "MESH":
            bpy.data.objects.remove(obj)
    scene = bpy.context.scene
    options = {"phases.resolution_before": 24, "phases.resolution_after": 24, "mesh.resolution": 48,
               "mesh.preview_resolution": 32, "mesh.density_threshold": 2.0}
    generate = scene.iso3d_generate
    generate.image_source, generate.image_path, generate.preset = "FILE", settings["image"], "tiny"
    generate.steps, generate.mesh_every, generate.options = 6, 2, json.dumps(options)
    started = time.monotonic()
    result = bpy.ops.iso3d.generate()
    print("WINDOW CHECK generate:", result, flush=True)

    def show_sidebar_and_shoot():
        state = bpy.context.scene.iso3d_job
        if state.state not in ("done", "failed") and time.monotonic() - started < 300:
            return 0.5
        print("WINDOW CHECK job:", state.job_kind, state.state, state.phase, state.step, state.total,
              state.mesh_updates, state.last_error, flush=True)
        finishing = state.job_kind == "finish"
        for window in bpy.context.window_manager.windows:
            for area in window.screen.areas:
                if area.type != "VIEW_3D":
                    continue
                space = area.spaces.active
                space.show_region_ui = True
                space.shading.type = "SOLID"
                space.shading.color_type = "TEXTURE" if finishing else "VERTEX"
                region = next(r for r in area.regions if r.type == "WINDOW")
                with bpy.context.temp_override(window=window, area=area, region=region):
                    obj = bpy.data.objects.get(state.object_name)
                    if obj is not None:
                        bpy.ops.object.select_all(action="DESELECT")
                        obj.select_set(True)
                        bpy.context.view_layer.objects.active = obj
                        bpy.ops.view3d.view_selected()
                for region in area.regions:
                    if region.type == "UI" and hasattr(region, "active_panel_category"):
                        try:  # writable from Blender 4.2; on 3.4 the tab is clicked by hand
                            region.active_panel_category = "Isotropic3D"
                        except (AttributeError, TypeError):
                            pass
                area.tag_redraw()
        bpy.app.timers.register(shoot_finished if finishing else shoot_and_finish, first_interval=1.5)
        return None

    def screenshot(name: str) -> None:
        path = str(Path(settings["out"]) / name)
        window = bpy.context.window_manager.windows[0]
        with bpy.context.temp_override(window=window):
            bpy.ops.screen.screenshot(filepath=path)
        print("WINDOW CHECK screenshot:", path, flush=True)

    def shoot_and_finish():
        nonlocal started
        screenshot("window.png")
        state = bpy.context.scene.iso3d_job
        if state.state != "done":
            bpy.ops.wm.quit_blender()
            return None
        obj = bpy.data.objects[state.object_name]
        finish = bpy.context.scene.iso3d_finish
        finish.faces, finish.texture, finish.lods = max(len(obj.data.polygons) // 3, 8), "256", "100"
        started = time.monotonic()
        print("WINDOW CHECK finish:", bpy.ops.iso3d.finish(), flush=True)
        bpy.app.timers.register(show_sidebar_and_shoot, first_interval=1.0)
        return None

    def shoot_finished():
        state = bpy.context.scene.iso3d_job
        obj = bpy.data.objects.get(state.object_name)
        if obj is not None:
            material = obj.active_material
            print("WINDOW CHECK finished object:", obj.name, len(obj.data.polygons), "faces; material",
                  material.name if material else None, "; UV maps", [uv.name for uv in obj.data.uv_layers],
                  "; children", [child.name for child in obj.children], flush=True)
        screenshot("finished.png")
        bpy.ops.wm.quit_blender()
        return None

    bpy.app.timers.register(show_sidebar_and_shoot, first_interval=1.0)


if __name__ == "__main__":
    if "bpy" in sys.modules:  # run by Blender
        inside()
    else:
        sys.exit(outside(Path(sys.argv[1] if len(sys.argv) > 1 else "out/window_check")))
