"""What each job kind runs: client settings -> validated settings -> the job's event stream.

Settings arrive from the network, so every key and value is checked here; anything unknown is refused.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from backend.errors import SettingsError, UserError
from backend.events import Done, Event, Failed, Progress, Views
from backend.imaging import decode_image, prepare_condition_image, prepare_preview_image
from backend.profiling import Laps
from backend.service.job_store import WORK_FOLDER
from backend.settings import describe, settings_from_dict, shown_key

# Keys sent by add-ons of earlier releases, read as today's wire keys (the field names of the settings dataclasses).
LEGACY_KEYS = {
    "preview": {"views": "num_views", "guidance": "guidance_scale", "azimuth": "azimuth_start"},
    "generate": {"steps": "run.steps", "seed": "run.seed", "mesh_every": "run.mesh_every"},
    "finish": {},
}
MAX_STREAMED_TEXTURE = 4096  # a 4096^2 PNG stays under the protocol's frame limit
log = logging.getLogger("iso3d.server")


def _wire_settings(kind: str, settings: dict) -> dict:
    """``settings`` with legacy keys renamed (and a generate job's legacy ``options`` object flattened)."""
    if not isinstance(settings, dict):
        raise SettingsError("settings must be an object of 'name': value")
    settings = dict(settings)
    if kind == "generate" and "options" in settings:
        options = settings.pop("options")
        if not isinstance(options, dict):
            raise SettingsError("setting 'options' must be an object of 'section.name': value")
        for key, value in options.items():
            settings.setdefault(key, value)
    for old, new in LEGACY_KEYS.get(kind, {}).items():
        if old in settings:
            if new in settings:
                raise SettingsError(f"settings '{old}' and '{new}' are the same setting; give '{new}' only")
            settings[new] = settings.pop(old)
    return settings


def preview_settings(settings: dict):
    """A preview job's settings (wire keys: PreviewSettings' field names) -> validated PreviewSettings."""
    from backend.diffusion.preview import PreviewSettings

    return settings_from_dict(PreviewSettings(), _wire_settings("preview", settings))


def generate_config(settings: dict):
    """``{"preset": "fast", "run.steps": 3000, "mesh.resolution": 256, ...}`` (wire keys: GenerateConfig's
    ``section.name``) -> the validated GenerateConfig, starting from the preset."""
    from backend.nerf.presets import DEFAULT_PRESET, preset

    settings = _wire_settings("generate", settings)
    name = settings.get("preset", DEFAULT_PRESET)
    if not isinstance(name, str):
        raise SettingsError("setting 'preset' must be text")
    return settings_from_dict(preset(name), settings, ignore=("preset",))


def capped_generate_config(settings: dict, max_gpu_memory: float):
    """``generate_config(settings)`` bounded by the service's GPU memory cap (GiB, ``iso3d serve --max-gpu-memory``;
    0: none): a job's own cap stays where it is lower."""
    config = generate_config(settings)
    if max_gpu_memory > 0 and not 0 < config.run.max_gpu_memory <= max_gpu_memory:
        config.run.max_gpu_memory = max_gpu_memory
    return config


def finish_settings(settings: dict):
    """``{"source": GENERATE_JOB_ID, "faces": 20000, "texture": 1024, "lods": [5000], "size": 1.0,
    "formats": ["glb"]}`` -> (source job id, FinishOptions). The input image of a finish job is not used."""
    from backend.finishing.pipeline import FinishOptions

    settings = _wire_settings("finish", settings)
    source = settings.get("source")
    if not isinstance(source, str):
        raise SettingsError("setting 'source' (the id of a generate job) is missing")
    options = settings_from_dict(FinishOptions(), settings, ignore=("source",))
    if options.texture > MAX_STREAMED_TEXTURE:
        raise SettingsError(f"setting 'texture': the service streams textures up to {MAX_STREAMED_TEXTURE}; "
                            "larger ones are written by `iso3d export`")
    return source, options


PARSERS = {"preview": preview_settings, "generate": generate_config, "finish": finish_settings}


def model_input(kind: str, image):
    """The model's input image of a ``kind`` job from its decoded input (PIL RGBA): a preview's sampler input
    (``prepare_preview_image``), a generate job's conditioning image (``prepare_condition_image``); None for a
    kind that uses no image (finish)."""
    if kind not in ("preview", "generate"):
        return None
    return (prepare_preview_image if kind == "preview" else prepare_condition_image)(image)


def validate_settings(kind: str, settings: dict):
    """Refuse bad settings at submit time (before the job is queued); the parsed settings."""
    if kind not in PARSERS:
        raise SettingsError(f"unknown job kind {shown_key(kind)}")
    return PARSERS[kind](settings)


def describe_job_settings() -> dict[str, dict]:
    """Defaults and bounds of every job kind's settings, as ``welcome`` carries them (blender_addon/core/protocol.py)."""
    from backend.diffusion.preview import PreviewSettings
    from backend.finishing.pipeline import FinishOptions
    from backend.nerf.presets import DEFAULT_PRESET, PRESETS, preset

    generate = {"preset": {"type": "choice", "default": DEFAULT_PRESET, "min": None, "max": None,
                           "choices": list(PRESETS), "help": "settings preset; the other defaults are this preset's"}}
    generate.update(describe(preset(DEFAULT_PRESET)))
    finish = describe(FinishOptions())
    finish["texture"]["max"] = MAX_STREAMED_TEXTURE
    return {"preview": describe(PreviewSettings()), "generate": generate, "finish": finish}


class JobRunner:
    """``runner(record, directory, cancel, resume)`` -> events, for the service's JobQueue.

    ``model_inputs`` holds the model input of a submitted job (``model_input``, made by the service's input worker
    from the image it decoded): the job's run takes it instead of decoding its stored ``input.png`` again. A job
    run without one (after a restart, a resume) decodes the stored file; both give the same tensor."""

    def __init__(self, model, store, max_gpu_memory: float = 0.0):
        self.model = model
        self.store = store
        self.max_gpu_memory = max_gpu_memory  # GiB a generate job may use at most (0: no service-wide cap)
        self.model_inputs: dict[str, object] = {}  # job id -> its model input, until the job runs or ends

    def __call__(self, record, directory: Path, cancel: threading.Event, resume: bool) -> Iterator[Event]:
        try:
            if record.kind == "finish":
                yield from self._finish(record, directory, cancel)
                return
            laps = Laps()
            image = self.model_inputs.pop(record.id, None)
            if image is None:
                stored = decode_image(self.store.input_png(record.id), "the job's input image")
                image = model_input(record.kind, stored)
            laps("decode")
            if record.kind == "preview":
                yield from self._preview(record, directory, image, cancel)
            elif record.kind == "generate":
                yield from self._generate(record, directory, image, cancel, resume, laps)
            else:
                yield Failed("bad_settings", f"unknown job kind {record.kind!r}")
        except UserError as error:
            yield Failed("bad_input", str(error))

    def _preview(self, record, directory: Path, image, cancel: threading.Event) -> Iterator[Event]:
        from backend.diffusion.preview import run_preview
        from backend.imaging import save_views_grid

        for event in run_preview(self.model, image, preview_settings(record.settings)):
            if cancel.is_set():
                yield Failed("cancelled", f"cancelled at step {record.step}")
                return
            yield event
            if isinstance(event, Views):
                yield Done({"views.png": str(save_views_grid(event.images, directory / "views.png"))})

    def _generate(self, record, directory: Path, image, cancel: threading.Event, resume: bool,
                  laps: Laps) -> Iterator[Event]:
        """The generate run's events; once its first step's progress is out, one log line with the job's set-up
        in ms (``laps`` holds the decode; then config, generate()'s parts, and ``first_step``: the rest up to the
        first step's progress, the first step itself with any guard check or recompile it pays), also on the log
        record as ``setup_ms`` (bench/service_generate.py reads it)."""
        from backend.nerf.trainer import CHECKPOINT_NAME, generate

        work = directory / WORK_FOLDER
        resume = resume and (work / CHECKPOINT_NAME).is_file()
        config = capped_generate_config(record.settings, self.max_gpu_memory)  # the service's cap bounds every job
        laps("config")
        logged = False
        for event in generate(self.model, config, work, image=image, device=self.model.device, resume=resume,
                              cancel=cancel, setup_ms=laps.ms):
            if not logged and isinstance(event, Progress):
                logged = True
                setup = dict(laps.ms)
                setup["first_step"] = round(max(laps.total_ms() - sum(setup.values()), 0.0), 2)
                log.info("generate job %s: first step %.0f ms after the job began (%s)", record.id,
                         sum(setup.values()), ", ".join(f"{part} {ms:.0f}" for part, ms in setup.items()),
                         extra={"setup_ms": setup})
            yield event

    def _finish(self, record, directory: Path, cancel: threading.Event | None = None) -> Iterator[Event]:
        """Finish a generate job's saved field (``settings.source``) into ``directory/finished``: Progress after
        each stage ("finish: <stage>"), then the finished meshes (main level 0, then each LOD: Z-up, placed,
        vertex colours, corner UVs and the baked texture) and Done listing the files. A cancel stops it after
        the current stage, with nothing written."""
        import queue

        from backend.events import MeshUpdate
        from backend.finishing.pipeline import finish_job

        source, options = finish_settings(record.settings)
        try:
            work = self.store.directory(source) / WORK_FOLDER
        except KeyError:
            raise UserError(f"finish: no job {source[:40]!r} on this backend") from None
        out = directory / "finished"
        started = time.monotonic()
        updates: queue.Queue = queue.Queue()

        def report(stage: str, done: int, total: int) -> None:
            if cancel is not None and cancel.is_set():
                raise _Cancelled()
            elapsed = time.monotonic() - started
            updates.put(Progress(f"finish: {stage}", done, total, elapsed, elapsed / done * (total - done)))

        def work_thread() -> None:
            try:
                updates.put(finish_job(work, out, options, device=str(self.model.device), name="asset",
                                       progress=report))
            except BaseException as error:  # noqa: BLE001 - handed to the job's thread below
                updates.put(error)

        threading.Thread(target=work_thread, name="iso3d-finish", daemon=True).start()
        while True:
            item = updates.get()
            if isinstance(item, Progress):
                yield item
                continue
            if isinstance(item, _Cancelled):
                yield Failed("cancelled", "finish cancelled; nothing was written")
                return
            if isinstance(item, BaseException):
                raise item
            result = item
            break
        for level, textured in enumerate(result.meshes):
            mesh = textured.mesh
            yield MeshUpdate(mesh.vertices, mesh.faces, mesh.vertex_colors, 0, final=True,
                             uvs=textured.corner_uvs, texture=textured.texture, level=level)
        yield Done({name: str(out / name) for level in result.levels for name in level.files},
                   note="; ".join(result.notes))


class _Cancelled(Exception):
    """Raised from a finish's progress callback to stop it at a stage boundary."""
