"""A real-window check: Blender under Xvfb with the add-on, its sidebar opened on the Isotropic3D tab, a preview
and a generate job from a tiny backend streamed into the viewport, then Finish on the generated object (the default
20,000-face budget, above the tiny surface: kept whole, with the note in the panel; one LOD as a child), and a
screenshot after each job.

    python -m tests.blender_addon.window_check OUT_DIR [--docs-images]
    # needs: apt-get install blender xvfb xauth python3-numpy python3-zmq (Debian bookworm: Blender 3.4)

Outside Blender it prepares a legacy add-on copy (the extension plus a ``bl_info``, so Blender 3.4 loads it too),
starts the backend and runs ``xvfb-run blender FILE.blend --enable-event-simulate --python`` on this same file (a
file on the command line: no splash screen). Inside Blender it opens the tab (``region.active_panel_category`` where
Blender has it, else simulated Ctrl+wheel over the sidebar's tabs, as an artist would), presses Preview, Generate and
Finish, lets the UI timer drain each stream and saves ``OUT_DIR/preview.png``, ``window.png`` and ``finished.png``.
``--docs-images`` also writes small cropped copies to ``docs/images/window_check_*.png``. A manual check: not part
of the suite (docs/development.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SCREEN = "1600x1000"
SHOTS = ("preview", "window", "finished")
BLENDER_S = 600  # a tiny-model preview, generate and finish take about a minute on a quiet 2-core machine
LEGACY_BL_INFO = (
    'bl_info = {"name": "Isotropic3D", "blender": (3, 4, 0), "category": "3D View", '
    '"location": "View3D > Sidebar > Isotropic3D", "description": "legacy copy for the window check"}\n'
)


def save_docs_images(out_dir: Path, docs_images: Path) -> None:
    """Small copies for the manual: each screenshot cropped to the 3D viewport (sidebar included) and stored with
    a 256-colour palette (~150 KB instead of ~600 KB), as ``window_check_<shot>.png``."""
    from PIL import Image

    bounds = json.loads((out_dir / "view3d.json").read_text())
    top = bounds["window_height"] - bounds["y"] - bounds["height"]  # Blender's y is up, the image's down
    box = (bounds["x"], top, bounds["x"] + bounds["width"], top + bounds["height"])
    docs_images.mkdir(parents=True, exist_ok=True)
    for name in SHOTS:
        with Image.open(out_dir / f"{name}.png") as shot:
            small = shot.convert("RGB").crop(box).quantize(256, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        target = docs_images / f"window_check_{name}.png"
        small.save(target, optimize=True)
        print(f"window check: {target} ({target.stat().st_size / 1000:.0f} KB)")


def outside(out_dir: Path, docs_images: Path | None = None) -> int:
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
        log = out_dir / "blender.log"
        with log.open("w") as log_file:  # written as it runs: a hang still leaves the log
            blender = subprocess.Popen(
                ["xvfb-run", "-a", "-s", f"-screen 0 {SCREEN}x24", "blender", "--factory-startup",
                 "--enable-event-simulate", str(empty_file), "--python", str(Path(__file__).resolve())],
                env=environment, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                blender.wait(timeout=BLENDER_S)
            except subprocess.TimeoutExpired:
                os.killpg(blender.pid, 9)  # xvfb-run, Xvfb and Blender: the session this check started
                blender.wait()
                print(f"window check: Blender did not finish within {BLENDER_S} s")
        print(log.read_text()[-3000:])
        shots = [out_dir / f"{name}.png" for name in SHOTS]
        if docs_images is not None and all(shot.is_file() for shot in shots):
            save_docs_images(out_dir, docs_images)
        return 0 if all(shot.is_file() for shot in shots) else 1
    finally:
        backend.stop()


def inside() -> None:
    """In Blender: a sequence of steps run by one timer (each ``yield`` waits that many seconds)."""
    import faulthandler

    import bpy

    faulthandler.enable()
    settings = json.loads(os.environ["ISO3D_WINDOW_CHECK"])
    sys.path.insert(0, str(Path(settings["addons"]) / "addons"))
    try:
        bpy.ops.preferences.addon_enable(module="isotropic3d")
    except RuntimeError:  # e.g. a module the add-on needs is missing from Blender's Python: say so and close
        import traceback

        traceback.print_exc()
        bpy.ops.wm.quit_blender()
        return
    preferences = bpy.context.preferences.addons["isotropic3d"].preferences
    preferences.backend_address = settings["address"]
    preferences.previews_folder = str(Path(settings["out"]) / "previews")
    for obj in list(bpy.data.objects):
        if obj.type == "MESH":
            bpy.data.objects.remove(obj)
    steps = check_steps(bpy, settings)

    def tick():
        try:
            return next(steps)
        except StopIteration:
            bpy.ops.wm.quit_blender()
        except Exception:  # noqa: BLE001 - a check script: print it and close Blender so the outside run ends
            import traceback

            traceback.print_exc()
            bpy.ops.wm.quit_blender()
        return None

    bpy.app.timers.register(tick, first_interval=1.0)


def view3d(bpy):
    """(window, area, sidebar region, main region) of the first 3D viewport."""
    window = bpy.context.window_manager.windows[0]
    area = next(a for a in window.screen.areas if a.type == "VIEW_3D")
    return (window, area, next(r for r in area.regions if r.type == "UI"),
            next(r for r in area.regions if r.type == "WINDOW"))


def open_isotropic3d_tab(bpy):
    """Shows the 3D viewport's sidebar on the Isotropic3D tab; yields waits; prints how. Blender 4.2+ can set the
    region's ``active_panel_category``; older Blender cannot from Python, so the check does what an artist does
    with the mouse: Ctrl+wheel over the sidebar cycles its tabs (simulated events, ``--enable-event-simulate``),
    one tab per sidebar redraw (a draw handler counts them), until the Generate panel's draw runs in one (a wrapper
    on it notes each draw)."""
    window, area, sidebar, _ = view3d(bpy)
    area.spaces.active.show_region_ui = True
    area.tag_redraw()
    yield 1.0
    window, area, sidebar, _ = view3d(bpy)
    try:
        sidebar.active_panel_category = "Isotropic3D"
        area.tag_redraw()
        print("WINDOW CHECK tab: set region.active_panel_category", flush=True)
        yield 1.0
        return
    except (AttributeError, TypeError):  # not there, or read-only before Blender 4.2
        pass
    panel = bpy.types.ISO3D_PT_generate
    drawn, sidebar_draws = [], [0]
    original_draw = panel.draw

    def noting_draw(self, context):
        drawn.append(True)
        original_draw(self, context)

    def count_sidebar_draw():
        sidebar_draws[0] += 1

    panel.draw = noting_draw
    handler = bpy.types.SpaceView3D.draw_handler_add(count_sidebar_draw, (), "UI", "POST_PIXEL")
    # over the tab strip at the sidebar's right edge, near its top: the sidebar overlaps the viewport, and an event
    # where it draws nothing goes to the viewport under it (Ctrl+wheel there pans the view)
    x, y = sidebar.x + sidebar.width - 10, sidebar.y + sidebar.height - 60
    try:
        for cycles in range(12):
            drawn.clear()
            seen = sidebar_draws[0]
            area.tag_redraw()
            for _ in range(40):  # until the sidebar has drawn again (a software-GL redraw can take seconds)
                yield 0.25
                if sidebar_draws[0] > seen:
                    break
            if drawn:
                print(f"WINDOW CHECK tab: Isotropic3D open after {cycles} Ctrl+wheel cycles", flush=True)
                break
            window.event_simulate(type="MOUSEMOVE", value="NOTHING", x=x, y=y)
            window.event_simulate(type="WHEELDOWNMOUSE", value="PRESS", x=x, y=y, ctrl=True)
            yield 0.5
        else:
            print(f"WINDOW CHECK tab: the Isotropic3D tab did not open ({sidebar_draws[0]} sidebar draws)",
                  flush=True)
    finally:
        panel.draw = original_draw
        bpy.types.SpaceView3D.draw_handler_remove(handler, "UI")
    yield 0.5


def wait_for_job(bpy, label: str, limit_s: float = 300.0):
    import time

    started = time.monotonic()
    state = bpy.context.scene.iso3d_job
    while (state.request or state.state not in ("done", "failed", "cancelled")) and time.monotonic() - started < limit_s:
        yield 0.5
    print(f"WINDOW CHECK {label}:", state.job_kind, state.state, state.phase, state.step, state.total,
          state.mesh_updates, repr(state.last_error), repr(state.note), flush=True)


def frame_object(bpy, name: str, textured: bool) -> None:
    window, area, _, region = view3d(bpy)
    space = area.spaces.active
    space.shading.type = "SOLID"
    space.shading.color_type = "TEXTURE" if textured else "VERTEX"
    obj = bpy.data.objects.get(name)
    if obj is not None:
        with bpy.context.temp_override(window=window, area=area, region=region):
            bpy.ops.object.select_all(action="DESELECT")
            obj.select_set(True)
            bpy.context.view_layer.objects.active = obj
            bpy.ops.view3d.view_selected()
    area.tag_redraw()


def screenshot(bpy, settings: dict, name: str) -> None:
    path = str(Path(settings["out"]) / name)
    window, area, _, _ = view3d(bpy)
    bounds = {"x": area.x, "y": area.y, "width": area.width, "height": area.height, "window_height": window.height}
    (Path(settings["out"]) / "view3d.json").write_text(json.dumps(bounds))  # for the cropped copies in docs
    with bpy.context.temp_override(window=window):
        bpy.ops.screen.screenshot(filepath=path)
    print("WINDOW CHECK screenshot:", path, flush=True)


def check_steps(bpy, settings: dict):
    """Open the tab, Preview, Generate, Finish; a screenshot after each job."""
    yield from open_isotropic3d_tab(bpy)
    scene = bpy.context.scene
    options = {"phases.resolution_before": 24, "phases.resolution_after": 24, "mesh.resolution": 48,
               "mesh.preview_resolution": 32, "mesh.density_threshold": 2.0}
    generate = scene.iso3d_generate
    generate.image_source, generate.image_path, generate.preset = "FILE", settings["image"], "tiny"
    generate.steps, generate.mesh_every, generate.options = 6, 2, json.dumps(options)
    generate.preview_steps = 3
    print("WINDOW CHECK preview:", bpy.ops.iso3d.preview_views(), flush=True)
    yield from wait_for_job(bpy, "preview job")
    yield 1.0
    screenshot(bpy, settings, "preview.png")
    print("WINDOW CHECK generate:", bpy.ops.iso3d.generate(), flush=True)
    yield from wait_for_job(bpy, "generate job")
    state = scene.iso3d_job
    frame_object(bpy, state.object_name, textured=False)
    yield 1.5
    screenshot(bpy, settings, "window.png")
    if state.state != "done":
        return
    obj = bpy.data.objects[state.object_name]
    finish = scene.iso3d_finish
    # the default 20,000-face budget is above the tiny model's surface: the panel shows the "kept whole" note
    finish.faces, finish.texture, finish.lods = 20000, "256", "500"
    print("WINDOW CHECK finish:", bpy.ops.iso3d.finish(), flush=True)
    yield from wait_for_job(bpy, "finish job")
    frame_object(bpy, state.object_name, textured=True)
    obj = bpy.data.objects.get(state.object_name)
    if obj is not None:
        material = obj.active_material
        print("WINDOW CHECK finished object:", obj.name, len(obj.data.polygons), "faces; material",
              material.name if material else None, "; UV maps", [uv.name for uv in obj.data.uv_layers],
              "; children", [child.name for child in obj.children], flush=True)
    yield 1.5
    screenshot(bpy, settings, "finished.png")


if __name__ == "__main__":
    if "bpy" in sys.modules:  # run by Blender
        inside()
    else:
        arguments = [a for a in sys.argv[1:] if a != "--docs-images"]
        docs = Path(__file__).resolve().parents[2] / "docs" / "images" if "--docs-images" in sys.argv else None
        sys.exit(outside(Path(arguments[0] if arguments else "out/window_check"), docs))
