"""What each job kind runs: client settings -> validated settings -> the job's event stream.

Settings arrive from the network, so every key and value is checked here; anything unknown is refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from backend.errors import SettingsError, UserError
from backend.events import Done, Event, Failed, Progress, Views
from backend.imaging import decode_image, image_to_tensor

PREVIEW_SETTINGS = {
    "views": ("num_views", int),
    "steps": ("steps", int),
    "guidance": ("guidance_scale", float),
    "eta": ("eta", float),
    "seed": ("seed", int),
    "elevation": ("elevation", float),
    "azimuth": ("azimuth_start", float),
    "camera_encoding": ("camera_encoding", str),
    "reference_frame": ("reference_frame", bool),
}


def _typed(name: str, value, kind):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise SettingsError(f"setting '{name}' must be {kind.__name__}")
    return value


def preview_settings(settings: dict):
    from backend.diffusion.preview import PreviewSettings

    unknown = sorted(set(settings) - set(PREVIEW_SETTINGS))
    if unknown:
        raise SettingsError(f"unknown preview settings: {', '.join(unknown)}")
    values = {PREVIEW_SETTINGS[k][0]: _typed(k, v, PREVIEW_SETTINGS[k][1]) for k, v in settings.items()}
    result = PreviewSettings(**values)
    result.validate()
    return result


def validate_settings(kind: str, settings: dict) -> None:
    """Refuse bad settings at submit time (before the job is queued)."""
    if kind == "preview":
        preview_settings(settings)
    elif kind == "generate":
        generate_config(settings)
    elif kind == "finish":
        finish_settings(settings)
    else:
        raise SettingsError(f"unknown job kind {kind!r}")


def generate_config(settings: dict):
    """``{"preset": "fast", "steps": 3000, "seed": 1, "mesh_every": 500, "options": {"section.name": value}}``."""
    from backend.nerf.presets import preset, set_option, validate

    allowed = {"preset", "steps", "seed", "mesh_every", "options"}
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise SettingsError(f"unknown generate settings: {', '.join(unknown)}")
    try:
        config = preset(_typed("preset", settings.get("preset", "fast"), str))
        shortcuts = {"steps": "run.steps", "seed": "run.seed", "mesh_every": "run.mesh_every"}
        for key, option in shortcuts.items():
            if key in settings:
                set_option(config, option, _typed(key, settings[key], int))
        options = settings.get("options", {})
        if not isinstance(options, dict):
            raise SettingsError("setting 'options' must be an object of 'section.name': value")
        for key, value in options.items():
            set_option(config, str(key), value)
        validate(config)
    except UserError:
        raise
    except (ValueError, KeyError, TypeError) as error:
        raise SettingsError(str(error).strip("'\"")) from None
    return config


MAX_STREAMED_TEXTURE = 4096  # a 4096^2 PNG stays under the protocol's frame limit
FINISH_SETTINGS = {"source": str, "faces": int, "texture": int, "lods": list, "size": float, "formats": list}


def finish_settings(settings: dict):
    """``{"source": GENERATE_JOB_ID, "faces": 20000, "texture": 1024, "lods": [5000], "size": 1.0,
    "formats": ["glb"]}`` -> (source job id, FinishOptions). The input image of a finish job is not used."""
    from backend.finishing.pipeline import FinishOptions, validate_options

    unknown = sorted(set(settings) - set(FINISH_SETTINGS))
    if unknown:
        raise SettingsError(f"unknown finish settings: {', '.join(unknown)}")
    if "source" not in settings:
        raise SettingsError("setting 'source' (the id of a generate job) is missing")
    values = {k: _typed(k, v, FINISH_SETTINGS[k]) for k, v in settings.items()}
    for key in ("lods", "formats"):
        kind = int if key == "lods" else str
        values[key] = tuple(_typed(key, item, kind) for item in values.get(key, ()))
    source = values.pop("source")
    if not values.get("formats"):
        values.pop("formats", None)
    options = FinishOptions(**values)
    validate_options(options)
    if options.texture > MAX_STREAMED_TEXTURE:
        raise SettingsError(f"texture size {options.texture}: the service streams textures up to "
                            f"{MAX_STREAMED_TEXTURE}; larger ones are written by `iso3d export`")
    return source, options


class JobRunner:
    """``runner(record, directory, cancel, resume)`` -> events, for the service's JobQueue."""

    def __init__(self, model, store, max_gpu_memory: float = 0.0):
        self.model = model
        self.store = store
        self.max_gpu_memory = max_gpu_memory  # GiB a generate job may use at most (0: no service-wide cap)

    def __call__(self, record, directory: Path, cancel: threading.Event, resume: bool) -> Iterator[Event]:
        try:
            if record.kind == "finish":
                yield from self._finish(record, directory, cancel)
                return
            image = image_to_tensor(decode_image(self.store.input_png(record.id), "the job's input image"))
            if record.kind == "preview":
                yield from self._preview(record, directory, image, cancel)
            elif record.kind == "generate":
                yield from self._generate(record, directory, image, cancel, resume)
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

    def _generate(self, record, directory: Path, image, cancel: threading.Event, resume: bool) -> Iterator[Event]:
        from backend.nerf.trainer import CHECKPOINT_NAME, generate

        work = directory / "work"
        resume = resume and (work / CHECKPOINT_NAME).is_file()
        config = generate_config(record.settings)
        cap = self.max_gpu_memory
        if cap > 0 and not 0 < config.run.max_gpu_memory <= cap:
            config.run.max_gpu_memory = cap  # the service's cap (iso3d serve --max-gpu-memory) bounds every job
        yield from generate(
            self.model,
            config,
            work,
            image=image,
            device=self.model.device,
            resume=resume,
            cancel=cancel,
        )

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
            work = self.store.directory(source) / "work"
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
        yield Done({name: str(out / name) for level in result.levels for name in level.files})


class _Cancelled(Exception):
    """Raised from a finish's progress callback to stop it at a stage boundary."""
