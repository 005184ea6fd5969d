"""How each backend message lands in the scenes that follow its job (the session's message handling and result
application), a mixin of ``session.Session``: ``apply(context, settings, message)`` calls ``_on_<type>``.

``welcome``/``jobs`` -> the backend's recent jobs and setting defaults; ``accepted``/``progress``/``error`` ->
``scene.iso3d_job``; ``views`` -> preview Image datablocks and empties; ``mesh`` -> one object replaced in place
(a ``finish`` job's levels: the object's mesh + baked material, then its LODs); ``done`` -> the GLB path on that
object (and Finish after Generate). The handlers use the session's bookkeeping (``client``, ``attached``,
``withdrawn``, ``resuming``, ``backend_jobs``, ``backend_settings``, ``undo_reasons``, ``announcements``) and its
``submit``; results that deserve an undo step name themselves in ``undo_reasons`` (the drain pushes it).
"""

from __future__ import annotations

import json
import re
import time

import bpy

from .core.connection import SessionSettings
from .scene_sync import FINISH_JOB_PROPERTY

FINISHED_STATES = ("done", "failed", "cancelled")



def job_scenes(job: str):
    return [scene for scene in bpy.data.scenes if getattr(scene, "iso3d_job", None) and scene.iso3d_job.job_id == job]


def _request_scene(request: str):
    for scene in bpy.data.scenes:
        if getattr(scene, "iso3d_job", None) and request and scene.iso3d_job.request == request:
            return scene
    return None


_ABSOLUTE_PATH = re.compile(r"""(?:[A-Za-z]:\\|/)(?:[^\s'"`:]+[/\\])+([^\s'"`/\\:]+)""")


def _plain_error(code: str, message: str) -> str:
    """An error for an artist: the backend's sentence (its file paths cut to their file names: they are the
    backend machine's, not the artist's), with the code only where it adds something."""
    message = _ABSOLUTE_PATH.sub(r"\1", (message or "").strip()) or code.replace("_", " ")
    return message[0].upper() + message[1:]



class SessionMessages:
    """The ``_on_<type>`` handlers of ``session.Session`` (a mixin: it holds no state of its own)."""

    def apply(self, context, settings: SessionSettings, message) -> None:
        handler = getattr(self, f"_on_{message.type}", None)
        if handler is not None:
            handler(context, settings, message)
    def _on_jobs(self, context, settings, message) -> None:
        self.backend_jobs = [job for job in message.get("jobs") if isinstance(job, dict) and job.get("job")]

    def _on_welcome(self, context, settings, message) -> None:
        if isinstance(message.get("jobs"), list):
            self.backend_jobs = [job for job in message.get("jobs") if isinstance(job, dict) and job.get("job")]
        if isinstance(message.get("settings"), dict):
            from .core.job_settings import apply_backend_defaults

            self.backend_settings = message.get("settings")
            for scene in bpy.data.scenes:
                if getattr(scene, "iso3d_generate", None) is not None:
                    apply_backend_defaults(scene, self.backend_settings)
        server = f"{message.get('server')} · {message.get('model')} on {message.get('device')}"
        if not message.get("trained"):
            server += " (untrained weights)"
        for scene in bpy.data.scenes:
            if getattr(scene, "iso3d_job", None) is not None:
                scene.iso3d_job.server = server

    def _on_accepted(self, context, settings, message) -> None:
        job = message.get("job")
        if message.get("request", "") in self.withdrawn:  # cancelled by the artist before it was accepted
            self.withdrawn.discard(message.get("request", ""))
            if self.client is not None:
                self.client.cancel(job)
            return
        scene = _request_scene(message.get("request", ""))
        scenes = [scene] if scene is not None else job_scenes(job)
        resumed = bool(message.get("request")) and self.resuming.get(job) == message.get("request")
        if resumed:  # the answer to our resume (not an attach's): it runs again from its saved step
            del self.resuming[job]
        for scene in scenes:
            state = scene.iso3d_job
            state.job_id, state.job_kind, state.request = job, message.get("kind"), ""
            state.position = message.get("position")
            if state.state not in FINISHED_STATES or resumed:
                state.state = "queued" if message.get("position") > 0 else "running"
            if resumed:
                state.phase, state.last_error, state.eta = "resuming", "", -1.0
            self.attached[job] = time.monotonic()
        if resumed and self.client is not None:
            self.client.list_jobs()  # the Jobs list shows it running again

    def _on_progress(self, context, settings, message) -> None:
        for scene in job_scenes(message.get("job")):
            state = scene.iso3d_job
            state.phase, state.step, state.total = message.get("phase"), message.get("step"), message.get("total")
            state.position = message.get("position", 0)
            state.eta = message.get("eta", -1.0)
            if state.state not in FINISHED_STATES:
                state.state = "queued" if message.get("phase") == "queued" else "running"

    def _on_views(self, context, settings, message) -> None:
        from . import scene_sync

        for scene in job_scenes(message.get("job")):
            state = scene.iso3d_job
            prefix = "Isotropic3D preview" if message.get("kind") == "preview" else f"{state.object_name} render"
            folder = f"{settings.previews_folder}/{message.get('job')}"
            images = [
                scene_sync.load_png_image(f"{prefix} {index}", png, folder)
                for index, png in enumerate(message.payloads)
            ]
            if message.get("kind") == "preview":
                collection = _collection(scene, "Isotropic3D previews")
                scene_sync.place_view_empties(prefix, images, message.get("c2w"), target=tuple(state.target),
                                              collection=collection)
                scene_sync.show_in_image_editor(scene_sync.preview_sheet(f"{prefix} sheet", images))
            self.undo_reasons.append("preview views")

    def _on_mesh(self, context, settings, message) -> None:
        from . import scene_sync
        from .core.client import decode_array

        job = message.get("job")
        vertices, faces, colours = (decode_array(message, index) for index in range(3))
        for scene in job_scenes(job):
            state = scene.iso3d_job
            state.object_name = state.object_name or f"Isotropic3D {job[:8]}"
            target = bpy.data.objects.get(state.object_name)
            if len(message.payloads) == 5:
                self._apply_finished(context, settings, scene, message, vertices, faces, colours)
                self.undo_reasons.append("finished mesh")
            elif target is not None and scene_sync.finished_from(target, job):
                continue  # a replay of the generation this object was finished from: keep the finished asset
            else:
                created = target is None or target.type != "MESH"
                obj = scene_sync.apply_mesh(state.object_name, vertices, faces, colours, job=job,
                                            collection=_active_collection(context, scene))
                if created:
                    scene_sync.place_new_object(obj, tuple(state.target), _view_layer(context, scene))
                state.object_name = obj.name
                if created or message.get("final"):
                    self.undo_reasons.append("mesh")
            state.mesh_updates += 1
            if message.get("final"):
                state.phase = "final mesh"

    def _apply_finished(self, context, settings: SessionSettings, scene, message, vertices, faces, colours) -> None:
        """A finish job's level: 0 replaces the object's mesh and material, i > 0 is its i-th LOD."""
        from . import scene_sync
        from .core.client import decode_array

        state, job, level = scene.iso3d_job, message.get("job"), message.get("level", 0)
        main = bpy.data.objects.get(state.object_name)
        if main is None or main.type != "MESH":  # a finished asset imported into a file without its object
            main = scene_sync.apply_mesh(state.object_name, vertices, faces, colours,
                                         collection=_active_collection(context, scene))
            scene_sync.place_new_object(main, tuple(state.target), _view_layer(context, scene))
            state.object_name = main.name
        name = main.name if level == 0 else f"{main.name} LOD{level}"
        texture = scene_sync.load_texture_image(f"{name} baked", message.payloads[4],
                                                f"{settings.previews_folder}/{job}")
        uvs = decode_array(message, 3)
        if level == 0:
            scene_sync.apply_finished_mesh(main, vertices, faces, colours, uvs, texture, finish_job=job)
        else:
            scene_sync.apply_lod(main, level, vertices, faces, colours, uvs, texture, scene.iso3d_finish.lod_layout)
        state.lod_levels = max(state.lod_levels, level)

    def _on_done(self, context, settings, message) -> None:
        artifacts = {item.get("name", ""): item.get("path", "") for item in message.get("artifacts")
                     if isinstance(item, dict)}
        for scene in job_scenes(message.get("job")):
            state = scene.iso3d_job
            newly_done = state.state != "done"  # not a replay of a job this scene has already seen end
            state.note = message.get("note", "")
            if newly_done:
                self.undo_reasons.append(f"{state.job_kind or 'job'} done")
                what = f" '{state.object_name}'" if state.object_name and state.job_kind != "preview" else ""
                note = f" ({state.note})" if state.note else ""
                self.announcements.append(("INFO", f"Isotropic3D: {state.job_kind or 'job'}{what} done{note}"))
            state.state, state.eta, state.position = "done", 0.0, 0
            state.step = state.total
            state.artifacts = json.dumps(artifacts)
            glb = artifacts.get("asset.glb") or next((p for n, p in artifacts.items() if n.endswith(".glb")), "")
            obj = bpy.data.objects.get(state.object_name) if state.object_name else None
            if obj is not None and glb:
                obj["iso3d_glb"] = glb
            if obj is not None and state.job_kind == "finish":
                from . import scene_sync

                scene_sync.remove_lods(obj, state.lod_levels)  # a re-run with fewer LODs drops the extra ones
            if (obj is not None and state.job_kind == "generate" and newly_done and scene.iso3d_finish.after_generate
                    and FINISH_JOB_PROPERTY not in obj):  # not again on a replay of a job already finished
                self._finish_after_generate(context, settings, scene, obj, message.get("job"))

    def _finish_after_generate(self, context, settings: SessionSettings, scene, obj, generate_job: str) -> None:
        """Finish after Generate: send the finish job for the object that was just generated."""
        from .core.job_settings import finish_settings

        try:
            job_settings = finish_settings(scene.iso3d_finish, generate_job)
        except ValueError as error:
            scene.iso3d_job.last_error = f"Generated, but not finished: {error}"
            return
        self.submit(context, settings, "finish", None, job_settings, obj.name, scene=scene)

    def _on_error(self, context, settings, message) -> None:
        job, code = message.get("job"), message.get("code")
        text = _plain_error(code, message.get("message"))
        scenes = job_scenes(job) if job else []
        if not scenes:  # an error about no job of ours (or a refused submission): the scene waiting for a reply
            scenes = [s for s in bpy.data.scenes if getattr(s, "iso3d_job", None) and s.iso3d_job.request] or [
                context.scene]
        for scene in scenes:
            state = scene.iso3d_job
            already_failed = state.state == "failed"  # a replay of an old failure is not news
            if code == "not_running" or (job in self.resuming and code != "cancelled"):
                state.last_error = text  # a refused cancel or resume: the job stays as it was
                continue
            if code == "cancelled":  # what the artist asked for: a state, not an error
                state.state, state.last_error, state.eta = "cancelled", "", -1.0
                if self.client is not None and job not in self.resuming:
                    self.client.list_jobs()  # the Jobs list learns whether it can be resumed
                continue
            state.last_error = text
            if code == "unknown_job" or state.request:
                state.state, state.request = "failed", ""
            elif job:
                state.state = "failed"
            if state.state == "failed" and not already_failed:
                self.announcements.append(("ERROR", f"Isotropic3D: {state.job_kind or 'job'} failed: {text}"))
        if job in self.resuming and code != "cancelled":
            del self.resuming[job]  # answered: refused

    def _on_pong(self, context, settings, message) -> None:
        pass


def _view_layer(context, scene):
    return context.view_layer if context.scene == scene and context.view_layer else scene.view_layers[0]


def _active_collection(context, scene):
    """Where new results go: the artist's active collection (the Outliner's highlighted one) of that scene."""
    view_layer = _view_layer(context, scene)
    return view_layer.active_layer_collection.collection if view_layer is not None else scene.collection


def _collection(scene, name: str):
    collection = bpy.data.collections.get(name)
    if collection is None:
        collection = bpy.data.collections.new(name)
    if collection.name not in scene.collection.children:
        scene.collection.children.link(collection)
    return collection
