"""Every sidebar panel draws in every state without an error, and names only real properties, operators and icons.

Background Blender has no window to draw into, so ``draw`` gets a layout that records each call and checks it
against Blender's own RNA (what the real UILayout would refuse with a console error and an empty row): property
names on their data, operator ids, icon names.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.blender
bpy = pytest.importorskip("bpy")

from blender_addon import scene_sync  # noqa: E402

ICONS = set(bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items.keys())


class CheckingLayout:
    """Records the items a panel draws; fails on names Blender would not know."""

    def __init__(self, items: list):
        self.items = items
        self.use_property_split = self.use_property_decorate = False
        self.enabled, self.scale_y = True, 1.0

    def _nested(self, *args, **kwargs):
        return CheckingLayout(self.items)

    column = row = box = split = _nested

    def _icon(self, icon):
        assert icon in ICONS, f"unknown icon {icon!r}"

    def label(self, text="", icon="NONE", **kwargs):
        self._icon(icon)
        self.items.append(("label", text))

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"{type(data).__name__} has no property {name!r}"
        self._icon(kwargs.get("icon", "NONE"))
        self.items.append(("prop", name))

    def template_ID(self, data, name, **kwargs):
        self.prop(data, name)

    def operator(self, idname, text=None, icon="NONE", **kwargs):
        category, name = idname.split(".")
        getattr(getattr(bpy.ops, category), name).get_rna_type()  # raises for an unknown operator
        self._icon(icon)
        self.items.append(("operator", idname, text))

    def progress(self, factor=0.0, text=""):
        assert 0.0 <= factor <= 1.0
        self.items.append(("progress", text))


def draw_all(context) -> dict[str, list]:
    """{panel id: what it drew} for every panel of the add-on's tab."""
    from blender_addon import panels

    drawn = {}
    for panel in panels.CLASSES:
        items = []
        holder = type("PanelSelf", (), {"layout": CheckingLayout(items)})()
        if hasattr(panel, "draw_header"):
            panel.draw_header(holder, context)
        panel.draw(holder, context)
        drawn[panel.bl_idname] = items
    return drawn


def texts(items) -> str:
    return " | ".join(str(item[-1]) for item in items)


def test_panels_draw_in_every_state(registered_addon):
    context = bpy.context
    drawn = draw_all(context)  # an empty file, no job
    assert "Select an object made by Generate" in texts(drawn["ISO3D_PT_finish"])
    assert ("operator", "iso3d.generate", None) in drawn["ISO3D_PT_generate"]
    for source in ("FILE", "IMAGE", "EMPTY"):
        context.scene.iso3d_generate.image_source = source
        draw_all(context)

    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int32)
    obj = scene_sync.apply_mesh("Thing", vertices, faces, np.zeros((4, 3), np.uint8), job="a" * 16)
    context.view_layer.objects.active = obj
    finish = draw_all(context)["ISO3D_PT_finish"]
    assert ("operator", "iso3d.finish", "Finish") in finish and "Thing: 4 faces" in texts(finish)
    assert {("prop", name) for name in ("faces", "texture", "lods", "lod_layout", "size")} <= set(finish)

    # finished, with a LOD, while the finish job of a re-run runs, then after it failed
    image = bpy.data.images.new("Thing baked", 8, 8)
    uvs = np.zeros((4, 3, 2), np.float32)
    scene_sync.apply_finished_mesh(obj, vertices, faces, np.zeros((4, 3), np.uint8), uvs, image, "b" * 16)
    lod = scene_sync.apply_lod(obj, 1, vertices, faces[:2], np.zeros((4, 3), np.uint8), uvs[:2], image)
    state = context.scene.iso3d_job
    state.job_id, state.job_kind, state.state, state.object_name = "c" * 16, "finish", "running", "Thing"
    state.phase, state.step, state.total, state.eta = "finish: unwrap", 1, 4, 3.0
    drawn = draw_all(context)
    assert ("operator", "iso3d.finish", "Re-run Finish") in drawn["ISO3D_PT_finish"]
    assert "LODs: 2 faces" in texts(drawn["ISO3D_PT_finish"]) and "finishing: unwrap 1/4" in texts(drawn["ISO3D_PT_finish"])
    assert ("progress", "25%") in drawn["ISO3D_PT_generate_progress"]
    state.state, state.last_error = "failed", "face budget 9 is larger than the surface (4 faces): lower it"
    drawn = draw_all(context)
    assert "larger than the surface" in texts(drawn["ISO3D_PT_finish"])
    context.view_layer.objects.active = lod  # a selected LOD finishes its object
    assert "Thing: 4 faces, finished" in texts(draw_all(context)["ISO3D_PT_finish"])
    for connection in ("OFFLINE", "CONNECTING", "CONNECTED", "LOST"):
        state.connection = connection
        draw_all(context)
