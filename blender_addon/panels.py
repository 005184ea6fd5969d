"""View3D sidebar tab "Isotropic3D": "Generate" (image, settings, buttons), its "Backend" and "Progress" sub-panels,
"Finish" (face budget, texture, LODs of the selected generated object) and "Render training views"."""

import bpy

from .preferences import backend_address, output_folder

class _SidebarTab:
    """Where every panel of the add-on lives: the 3D View's sidebar, tab "Isotropic3D"."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Isotropic3D"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


class ISO3D_PT_generate(_SidebarTab, bpy.types.Panel):
    bl_label = "Generate"
    bl_idname = "ISO3D_PT_generate"
    bl_order = 0

    def draw(self, context):
        layout = self.layout
        settings = context.scene.iso3d_generate
        state = context.scene.iso3d_job
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(settings, "image_source")
        if settings.image_source == "FILE":
            layout.prop(settings, "image_path")
        elif settings.image_source == "IMAGE":
            layout.template_ID(settings, "image", open="image.open")
        else:
            obj = context.active_object
            name = obj.data.name if obj and obj.type == "EMPTY" and obj.data else "no active image empty"
            layout.label(text=name, icon="IMAGE_DATA")
        column = layout.column(align=True)
        column.prop(settings, "preset")
        column.prop(settings, "steps")
        column.prop(settings, "mesh_every")
        column.prop(settings, "seed")
        column = layout.column(align=True)
        column.prop(settings, "guidance")
        column.prop(settings, "preview_steps")
        column.prop(settings, "elevation")
        layout.prop(settings, "result_object")
        layout.prop(context.scene.iso3d_finish, "after_generate")
        row = layout.row(align=True)
        row.scale_y = 1.4
        row.operator("iso3d.preview_views", icon="IMAGE_PLANE")
        row.operator("iso3d.generate", icon="MESH_MONKEY")
        row = layout.row()
        row.enabled = state.active
        row.operator("iso3d.cancel", icon="CANCEL")


class ISO3D_PT_generate_progress(_SidebarTab, bpy.types.Panel):
    bl_label = "Progress"
    bl_idname = "ISO3D_PT_generate_progress"
    bl_parent_id = "ISO3D_PT_generate"

    def draw(self, context):
        layout = self.layout
        state = context.scene.iso3d_job
        if not state.job_id and not state.request and not state.last_error:
            layout.label(text="No job yet")
        if state.job_id or state.request:
            layout.label(text=f"{state.job_kind or 'job'} {state.job_id or '(sending)'}: {state.state or 'attaching'}")
            if state.phase:
                text = f"{state.phase}"
                if state.total:
                    text += f"  {state.step}/{state.total}"
                if state.position:
                    text += f"  (queue position {state.position})"
                if state.eta >= 0 and state.state == "running":
                    text += f"  ETA {_duration(state.eta)}"
                layout.label(text=text, icon="TIME")
            if state.total and hasattr(layout, "progress"):  # Blender 4.0+
                layout.progress(factor=min(state.step / state.total, 1.0), text=f"{100 * state.step // state.total}%")
            if state.mesh_updates:
                layout.label(text=f"{state.mesh_updates} mesh updates into '{state.object_name}'", icon="MESH_DATA")
        if state.last_error:
            _error_box(layout, state.last_error)


class ISO3D_PT_generate_backend(_SidebarTab, bpy.types.Panel):
    bl_label = "Backend"
    bl_idname = "ISO3D_PT_generate_backend"
    bl_parent_id = "ISO3D_PT_generate"
    bl_options = {"DEFAULT_CLOSED"}

    def draw_header(self, context):
        state = context.scene.iso3d_job
        icon = {"CONNECTED": "LINKED", "CONNECTING": "TIME", "LOST": "ERROR"}.get(state.connection, "UNLINKED")
        self.layout.label(text="", icon=icon)

    def draw(self, context):
        from .session import SESSION

        layout = self.layout
        state = context.scene.iso3d_job
        label = state.bl_rna.properties["connection"].enum_items[state.connection].name
        layout.label(text=f"{label}: {backend_address(context)}")
        if state.server:
            layout.label(text=state.server)
        layout.operator("iso3d.connect", icon="LINKED")
        layout.label(text=SESSION.local_backend.status_line())
        row = layout.row(align=True)
        row.operator("iso3d.start_local_backend", text="Start local", icon="PLAY")
        row.operator("iso3d.stop_local_backend", text="Stop local", icon="PAUSE")


def _error_box(layout, text: str) -> None:
    """An error in plain words, wrapped to the sidebar's width."""
    box = layout.box()
    for index, line in enumerate(_wrap(text, 48)):
        box.label(text=line, icon="ERROR" if index == 0 else "BLANK1")


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + ([line] if line else [])


class ISO3D_PT_finish(_SidebarTab, bpy.types.Panel):
    bl_label = "Finish"
    bl_idname = "ISO3D_PT_finish"
    bl_order = 5

    def draw(self, context):
        from .operators_finish import finish_target
        from .scene_sync import FINISH_JOB_PROPERTY, lod_objects

        layout = self.layout
        obj = finish_target(context)
        if obj is None:
            layout.label(text="Select an object made by Generate", icon="INFO")
            return
        properties = context.scene.iso3d_finish
        mesh = obj.data
        finished = bool(obj.get(FINISH_JOB_PROPERTY))
        layout.label(text=f"{obj.name}: {len(mesh.polygons):,} faces" + (", finished" if finished else ""),
                     icon="CHECKMARK" if finished else "MESH_DATA")
        layout.use_property_split = True
        layout.use_property_decorate = False
        column = layout.column(align=True)
        column.prop(properties, "faces")
        column.prop(properties, "texture")
        column.prop(properties, "size")
        column = layout.column(align=True)
        column.prop(properties, "lods")
        column.prop(properties, "lod_layout")
        lods = lod_objects(obj)
        if lods:
            counts = ", ".join(f"{len(lods[level].data.polygons):,}" for level in sorted(lods))
            layout.label(text=f"LODs: {counts} faces", icon="OUTLINER_OB_GROUP_INSTANCE")
        state = context.scene.iso3d_job
        row = layout.row()
        row.scale_y = 1.4
        row.enabled = not state.active
        row.operator("iso3d.finish", text="Re-run Finish" if finished else "Finish", icon="MOD_DECIM")
        if state.job_kind == "finish" and state.object_name == obj.name:
            if state.active or state.request:
                stage = f"{state.phase.removeprefix('finish: ')} {state.step}/{state.total}" if state.total else ""
                layout.label(text=f"finishing: {stage or state.state or 'sending'}", icon="TIME")
            elif state.state == "failed" and state.last_error:
                _error_box(layout, state.last_error)


class ISO3D_PT_render_training_views(_SidebarTab, bpy.types.Panel):
    bl_label = "Render training views"
    bl_idname = "ISO3D_PT_render_training_views"
    bl_options = {"DEFAULT_CLOSED"}
    bl_order = 10

    def draw(self, context):
        layout = self.layout
        properties = context.scene.iso3d_render
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(properties, "grouping")
        column = layout.column(align=True)
        column.prop(properties, "resolution")
        column.prop(properties, "fixed_views")
        column.prop(properties, "fixed_elevation")
        column.prop(properties, "random_views")
        row = column.row(align=True)
        row.prop(properties, "random_elevation_min")
        row.prop(properties, "random_elevation_max")
        column.prop(properties, "distance")
        column.prop(properties, "fov")
        column = layout.column(align=True)
        column.prop(properties, "background")
        column.prop(properties, "engine")
        column.prop(properties, "device")
        column.prop(properties, "samples")
        column.prop(properties, "denoise")
        column.prop(properties, "seed")
        layout.label(text=f"Output: {output_folder(context)}", icon="FILE_FOLDER")
        layout.operator("iso3d.render_training_views", icon="RENDER_STILL")


CLASSES = (ISO3D_PT_generate, ISO3D_PT_generate_progress, ISO3D_PT_generate_backend, ISO3D_PT_finish,
           ISO3D_PT_render_training_views)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
