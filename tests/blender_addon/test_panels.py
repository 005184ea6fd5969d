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

    template_ID_preview = template_ID

    def operator(self, idname, text=None, icon="NONE", **kwargs):
        category, name = idname.split(".")
        rna = getattr(getattr(bpy.ops, category), name).get_rna_type()  # raises for an unknown operator
        self._icon(icon)
        self.items.append(("operator", idname, text))
        return OperatorProperties(rna)

    def progress(self, factor=0.0, text="", type="BAR"):
        assert 0.0 <= factor <= 1.0 and type in ("BAR", "RING")
        self.items.append(("progress", text))


class OperatorProperties:
    """What ``layout.operator`` returns: setting a property the operator does not have fails."""

    def __init__(self, rna):
        object.__setattr__(self, "rna", rna)

    def __setattr__(self, name, value):
        assert name in self.rna.properties, f"{self.rna.identifier} has no property {name!r}"


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
    assert ("operator", "iso3d.preview_views", "Preview") in drawn["ISO3D_PT_generate"]
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
    state.state, state.last_error = "failed", "Setting 'faces': a budget of 1 leaves nothing of the surface"
    drawn = draw_all(context)
    assert "a budget of 1 leaves nothing of | the surface" in texts(drawn["ISO3D_PT_finish"])
    # done with a note: wrapped to the sidebar's width, every word there
    state.state, state.last_error, state.note = "done", "", "the surface has 4 faces, under the 20,000 budget: kept whole"
    labels = [item[-1] for item in draw_all(context)["ISO3D_PT_finish"] if item[0] == "label"]
    note = labels[labels.index("the surface has 4 faces,"):]
    assert " ".join(note) == state.note and all(len(line) <= 24 for line in note)
    state.note = ""
    context.view_layer.objects.active = lod  # a selected LOD finishes its object
    assert "Thing: 4 faces, finished" in texts(draw_all(context)["ISO3D_PT_finish"])
    for connection in ("OFFLINE", "CONNECTING", "CONNECTED", "LOST"):
        state.connection = connection
        draw_all(context)


def draw_status_bar(context) -> list:
    from blender_addon import panels

    items = []
    panels.draw_status_bar(type("Header", (), {"layout": CheckingLayout(items)})(), context)
    return items


def test_a_running_job_replaces_the_buttons_with_its_progress_and_a_lost_connection_shows_on_it(registered_addon):
    from blender_addon.session import SESSION

    context = bpy.context
    state = context.scene.iso3d_job
    assert draw_status_bar(context) == []  # no job: nothing in the status bar
    state.job_id, state.job_kind, state.state, state.connection = "d" * 16, "generate", "running", "CONNECTED"
    state.phase, state.step, state.total, state.eta = "sds", 30, 120, 138.0
    generate = draw_all(context)["ISO3D_PT_generate"]
    assert ("operator", "iso3d.cancel", None) in generate and ("progress", "25%") in generate
    assert not any(item[:2] in (("operator", "iso3d.generate"), ("operator", "iso3d.preview_views"))
                   for item in generate)  # no second, unseen job can be started
    assert "generate: sds 30/120, ETA 2:18" in texts(generate)
    assert "ETA 2:18" in texts(draw_status_bar(context))
    state.connection = "LOST"
    SESSION.lost_since = None
    drawn = draw_all(context)
    for panel in ("ISO3D_PT_generate", "ISO3D_PT_generate_progress"):
        assert "Connection to the backend lost" in texts(drawn[panel]) and "Start local" in texts(drawn[panel])
    assert "connection lost" in texts(draw_status_bar(context))
    state.state, state.connection = "done", "CONNECTED"
    assert draw_status_bar(context) == [] and ("operator", "iso3d.generate", None) in draw_all(context)[
        "ISO3D_PT_generate"]


def test_the_jobs_list_shows_this_files_and_the_backends_jobs_with_their_actions(registered_addon):
    import time

    from blender_addon.session import SESSION

    context = bpy.context
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    scene_sync.apply_mesh("Chair", vertices, np.array([[0, 1, 2]], np.int32), np.zeros((3, 3), np.uint8),
                          job="e" * 16)
    state = context.scene.iso3d_job
    state.job_id, state.job_kind, state.state, state.object_name = "f" * 16, "generate", "running", "Lamp"
    state.step, state.total = 5, 50
    # the backend's summaries as its `jobs` / `welcome` messages carry them
    SESSION.backend_jobs = [
        {"job": "f" * 16, "kind": "generate", "name": "Lamp", "status": "running", "step": 6, "total": 50,
         "created": time.time() - 120},
        {"job": "1" * 16, "kind": "preview", "name": "", "status": "failed", "step": 0, "total": 0,
         "created": time.time() - 7200},
    ]
    try:
        jobs = draw_all(context)["ISO3D_PT_generate_jobs"]
    finally:
        SESSION.backend_jobs = []
    shown = texts(jobs)
    assert "2 in this file, 2 on the backend" in shown
    assert "generate: Chair" in shown and "generate: Lamp" in shown and "preview: 11111111" in shown
    assert "running 5/50, 2 min ago" in shown and "failed, 2 h ago" in shown
    operators = [item[1] for item in jobs if item[0] == "operator"]
    assert operators.count("iso3d.connect") == 4  # attach (and import for the done one) on every row
    assert operators.count("iso3d.cancel") == 1  # only the running job can be cancelled


def test_resume_is_offered_for_cancelled_generate_jobs_that_saved_their_state(registered_addon):
    from blender_addon.session import SESSION

    context = bpy.context
    state = context.scene.iso3d_job
    state.job_id, state.job_kind, state.state, state.object_name = "a" * 16, "generate", "cancelled", "Vase"
    SESSION.backend_jobs = [  # as the backend's `jobs` lists them after the cancels
        {"job": "a" * 16, "kind": "generate", "name": "Vase", "status": "cancelled", "step": 7, "total": 40,
         "resumable": True},
        {"job": "b" * 16, "kind": "generate", "name": "Cup", "status": "cancelled", "step": 0, "total": 0,
         "resumable": False},  # cancelled before its first step: nothing saved
        {"job": "c" * 16, "kind": "preview", "name": "", "status": "cancelled", "step": 3, "total": 20,
         "resumable": False},
        {"job": "d" * 16, "kind": "generate", "name": "Bowl", "status": "done", "step": 40, "total": 40,
         "resumable": False},
    ]
    try:
        drawn = draw_all(context)
        assert ("operator", "iso3d.resume", None) in drawn["ISO3D_PT_generate_progress"]  # the scene's own job
        jobs = [item for item in drawn["ISO3D_PT_generate_jobs"] if item[0] == "operator"]
        assert [item[1] for item in jobs].count("iso3d.resume") == 1  # only the job with a saved state
        SESSION.backend_jobs[0]["resumable"] = False  # the backend's word on the scene's job in this state
        assert ("operator", "iso3d.resume", None) not in draw_all(context)["ISO3D_PT_generate_progress"]
        SESSION.backend_jobs = []  # no list yet: a cancelled generate job is offered, a refusal comes in words
        assert ("operator", "iso3d.resume", None) in draw_all(context)["ISO3D_PT_generate_progress"]
        state.job_kind = "preview"
        assert ("operator", "iso3d.resume", None) not in draw_all(context)["ISO3D_PT_generate_progress"]
    finally:
        SESSION.backend_jobs = []
