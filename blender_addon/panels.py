"""View3D sidebar tab "Isotropic3D": "Generate" (image, settings, buttons that become progress + Cancel while its job
runs), its "Progress", "Jobs" and "Backend" sub-panels, "Finish" (face budget, texture, LODs of the selected
generated object) and "Render training views"; a status bar entry while a job runs."""

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


def job_progress_text(state) -> str:
    """One line for a running job: kind, phase, step/total, queue position, ETA."""
    text = f"{state.job_kind or 'job'}: {state.phase or state.state or 'sending'}"
    if state.total:
        text += f" {state.step}/{state.total}"
    if state.position:
        text += f", queue position {state.position}"
    if state.eta >= 0 and state.state == "running":
        text += f", ETA {_duration(state.eta)}"
    return text


def lost_connection_text(state) -> str:
    """What a lost connection means for the job, and what to do (shown on the job itself)."""
    from .session import SESSION

    since = ""
    if SESSION.lost_since is not None:
        import time

        since = f" {_duration(time.monotonic() - SESSION.lost_since)} ago"
    return (f"Connection to the backend lost{since}. Nothing more arrives until it is back: start the backend again "
            "(Backend > Start local, or `iso3d serve` where it ran); the job resumes there and is re-attached "
            "here by itself")


def _job_busy(state) -> bool:
    """The scene's job is on its way (its image being prepared, sent, queued or running)."""
    from .session import SESSION

    return state.active or bool(state.request) or state.id_data.name in SESSION.preparing


class ISO3D_PT_generate(_SidebarTab, bpy.types.Panel):
    bl_label = "Generate"
    bl_idname = "ISO3D_PT_generate"
    bl_order = 0

    def draw(self, context):
        from .core.client import zmq_problem

        layout = self.layout
        settings = context.scene.iso3d_generate
        state = context.scene.iso3d_job
        problem = zmq_problem()
        if problem:
            _error_box(layout, problem)
            return
        layout.prop(settings, "image_source", expand=True)
        if settings.image_source == "FILE":
            layout.prop(settings, "image_path", text="")
        elif settings.image_source == "IMAGE":
            layout.template_ID_preview(settings, "image", open="image.open", rows=3, cols=6)
        else:
            obj = context.active_object
            name = obj.data.name if obj and obj.type == "EMPTY" and obj.data else "no active image empty"
            layout.label(text=name, icon="IMAGE_DATA")
        layout.use_property_split = True
        layout.use_property_decorate = False
        column = layout.column(align=True)
        column.prop(settings, "preset")
        column.prop(settings, "steps")
        column.prop(settings, "mesh_every", text="Mesh every")
        column.prop(settings, "seed")
        column = layout.column(heading="Preview", align=True)
        column.prop(settings, "preview_steps", text="Steps")
        column.prop(settings, "guidance", text="Guidance")
        column.prop(settings, "elevation", text="Elevation")
        layout.prop(settings, "result_object", text="Into")
        layout.prop(context.scene.iso3d_finish, "after_generate", text="Then Finish")
        if _job_busy(state):  # the buttons become the job: its progress and its Cancel
            box = layout.box()
            box.label(text=job_progress_text(state), icon="TIME")
            if state.total:
                box.progress(factor=min(state.step / state.total, 1.0), text=f"{100 * state.step // state.total}%")
            if state.connection == "LOST":
                _error_box(box, lost_connection_text(state))
            row = box.row()
            row.scale_y = 1.4
            row.operator("iso3d.cancel", icon="CANCEL")
            return
        column = layout.column(align=True)
        column.scale_y = 1.4
        column.operator("iso3d.preview_views", text="Preview", icon="IMAGE_PLANE")
        column.operator("iso3d.generate", icon="MESH_MONKEY")


class ISO3D_PT_generate_progress(_SidebarTab, bpy.types.Panel):
    bl_label = "Progress"
    bl_idname = "ISO3D_PT_generate_progress"
    bl_parent_id = "ISO3D_PT_generate"

    def draw(self, context):
        layout = self.layout
        state = context.scene.iso3d_job
        if not state.job_id and not state.request and not state.last_error and not state.state:
            layout.label(text="No job yet")
        if state.job_id or state.request or state.state:
            icon = {"done": "CHECKMARK", "failed": "ERROR", "cancelled": "CANCEL"}.get(state.state, "TIME")
            layout.label(text=job_progress_text(state) if _job_busy(state) else
                         f"{state.job_kind or 'job'}: {state.state}", icon=icon)
            if state.total and _job_busy(state):
                layout.progress(factor=min(state.step / state.total, 1.0), text=f"{100 * state.step // state.total}%")
            if state.mesh_updates:
                layout.label(text=f"{state.mesh_updates} meshes into '{state.object_name}'", icon="MESH_DATA")
            if can_resume(state.job_id, state.job_kind, state.state):
                layout.operator("iso3d.resume", icon="PLAY")
            if state.job_kind == "preview" and state.state == "done":
                layout.operator("iso3d.generate_from_seed", text=f"Generate from seed {state.seed}",
                                icon="MESH_MONKEY")
            if state.connection == "LOST" and _job_busy(state):
                _error_box(layout, lost_connection_text(state))
        if state.last_error:
            _error_box(layout, state.last_error)


def can_resume(job: str, kind: str, status: str) -> bool:
    """Whether to offer Resume: the backend's job list says so for the job in this state (a generate job that was
    cancelled, or failed by interruptions, with its saved state); else any cancelled generate job (a refused resume
    is answered in words)."""
    from .session import SESSION

    listed = next((row for row in SESSION.backend_jobs if row.get("job") == job), {})
    if listed.get("status") == status and "resumable" in listed:
        return bool(job) and listed["resumable"] is True
    return bool(job) and kind == "generate" and status == "cancelled"


def _age(created: float) -> str:
    import time

    seconds = max(time.time() - float(created or 0), 0)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def file_jobs() -> dict[str, dict]:
    """Jobs this file knows: the scenes' current jobs and the jobs recorded on generated objects (job -> row)."""
    from .scene_sync import FINISH_JOB_PROPERTY, JOB_PROPERTY

    jobs = {}
    for obj in bpy.data.objects:
        for key, kind in ((JOB_PROPERTY, "generate"), (FINISH_JOB_PROPERTY, "finish")):
            if obj.get(key):
                jobs[obj[key]] = {"job": obj[key], "kind": kind, "name": obj.name, "status": "done"}
    for scene in bpy.data.scenes:
        state = getattr(scene, "iso3d_job", None)
        if state is not None and state.job_id:
            jobs[state.job_id] = {"job": state.job_id, "kind": state.job_kind, "name": state.object_name,
                                  "status": state.state or "attaching", "step": state.step, "total": state.total}
    return jobs


class ISO3D_PT_generate_jobs(_SidebarTab, bpy.types.Panel):
    """This file's jobs and the backend's recent ones, each with attach / cancel / resume / import."""

    bl_label = "Jobs"
    bl_idname = "ISO3D_PT_generate_jobs"
    bl_parent_id = "ISO3D_PT_generate"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        from .session import SESSION

        layout = self.layout
        here = file_jobs()
        backend = {job["job"]: job for job in SESSION.backend_jobs}
        rows = [{**backend.get(job, {}), **row, "status": backend.get(job, row).get("status", row["status"])}
                for job, row in here.items()]
        rows += [job for job_id, job in sorted(backend.items(), key=lambda item: -float(item[1].get("created", 0)))
                 if job_id not in here][:10]
        header = layout.row()
        header.label(text=f"{len(here)} in this file, {len(backend)} on the backend")
        header.operator("iso3d.refresh_jobs", text="", icon="FILE_REFRESH")
        current = context.scene.iso3d_job.job_id
        for row in rows:
            box = layout.box()
            status = row.get("status", "")
            progress = f" {row.get('step', 0)}/{row['total']}" if row.get("total") and status == "running" else ""
            when = f", {_age(row['created'])}" if row.get("created") else ""
            icon = {"done": "CHECKMARK", "failed": "ERROR", "cancelled": "CANCEL"}.get(status, "TIME")
            title = box.row()
            title.label(text=f"{row.get('kind', 'job')}: {row.get('name') or row['job'][:8]}", icon=icon)
            if row["job"] == current:
                title.label(text="", icon="LAYER_ACTIVE")
            line = box.row(align=True)
            line.label(text=f"{status}{progress}{when}")
            line.operator("iso3d.connect", text="", icon="LINKED").job = row["job"]
            if status in ("queued", "running"):
                line.operator("iso3d.cancel", text="", icon="CANCEL").job = row["job"]
            elif can_resume(row["job"], row.get("kind", ""), status):
                line.operator("iso3d.resume", text="", icon="PLAY").job = row["job"]
            elif status == "done" and row.get("kind") in ("generate", "finish"):
                line.operator("iso3d.connect", text="", icon="IMPORT").job = row["job"]  # replays its result


def draw_status_bar(self, context):
    """The status bar entry: the scene's job while it runs, or a lost connection."""
    state = getattr(context.scene, "iso3d_job", None)
    if state is None or not _job_busy(state):
        return
    row = self.layout.row(align=True)
    if state.connection == "LOST":
        row.label(text="Isotropic3D: connection lost", icon="ERROR")
    elif state.total:
        row.progress(factor=min(state.step / state.total, 1.0), type="RING", text="")
        row.label(text=f"Isotropic3D {job_progress_text(state)}")
    else:
        row.label(text=f"Isotropic3D {job_progress_text(state)}", icon="TIME")


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
            elif state.state == "done" and state.note:  # what the finish adapted, e.g. a budget above the surface
                for part in state.note.split("; "):
                    for index, line in enumerate(_wrap(part, 24)):  # fits the sidebar's default width (with an icon)
                        layout.label(text=line, icon="INFO" if index == 0 else "BLANK1")


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


CLASSES = (ISO3D_PT_generate, ISO3D_PT_generate_progress, ISO3D_PT_generate_jobs, ISO3D_PT_generate_backend,
           ISO3D_PT_finish,
           ISO3D_PT_render_training_views)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(CLASSES)


def register():
    _register_classes()
    bpy.types.STATUSBAR_HT_header.append(draw_status_bar)


def unregister():
    bpy.types.STATUSBAR_HT_header.remove(draw_status_bar)
    _unregister_classes()
