"""``iso3d-render --ray [ADDRESS]``: the same renders as ``RenderPool``, as one Ray task per object.

Ray balances the objects over every CPU (or GPU) the cluster has, so a few huge objects never stall a shard; the
driver (this module, inside ``iso3d-render``) keeps at most ``concurrency`` tasks in flight, enforces the
per-object time limit (``ray.cancel(force=True)`` kills the worker; the object fails, as an overrun repeats),
retries an object whose worker crashed (killed, out of memory, node lost) up to ``retries`` more times, and yields a
``RenderResult`` per object for the manifest and the progress bar. A task renders and publishes exactly as a pool
worker does (``TrainingViewRenderer.render_file``: a staging folder locked by the task's process, checked whole, one
rename), so a killed task leaves nothing that looks finished; its retry starts from a fresh staging folder and removes
the dead one.

Each Ray worker process keeps one bpy scene for all the objects it renders; its Blender output goes to
``DIR/.logs/<shard>/ray-worker-<pid>.log``. On a cluster every node needs this package and ``bpy`` installed
(or a Ray ``runtime_env``) and the output folder on a shared file system.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque

from .render_inputs import RenderItem
from .render_workers import RenderResult, WorkerStartError, render_one_object

POLL_S = 0.5  # how often the driver checks time limits while waiting for results

_renderer = None  # (settings key, TrainingViewRenderer) of this Ray worker process
_log_redirected = False


def hide_unusable_pyarrow():
    """Ray registers pyarrow serializers whenever ``import pyarrow`` does not raise ModuleNotFoundError; a pyarrow
    built for NumPy 2 next to NumPy 1 (bpy 5.0's) raises ImportError instead and breaks every Ray process. Such a
    pyarrow is hidden (no render data goes through Arrow). Runs in the driver and, as Ray's
    ``worker_process_setup_hook``, in every worker."""
    import sys

    if "pyarrow" in sys.modules:
        return
    try:
        import pyarrow  # noqa: F401
    except ModuleNotFoundError:
        pass
    except ImportError:
        sys.modules["pyarrow"] = None  # later imports raise ModuleNotFoundError


def _renderer_for(settings: dict, log_dir: str):
    """This worker process's renderer for ``settings`` (bpy imported and the scene set up once)."""
    global _renderer, _log_redirected
    key = json.dumps(settings, sort_keys=True)
    if _renderer is not None and _renderer[0] == key:
        return _renderer[1]
    if not _log_redirected:
        from .render_workers import redirect_output

        os.makedirs(log_dir, exist_ok=True)
        redirect_output(os.path.join(log_dir, f"ray-worker-{os.getpid()}.log"))
        _log_redirected = True
    import bpy

    from blender_addon.dataset_render import TrainingViewRenderer
    from blender_addon.core.render_plan import RenderSettings

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.preferences.edit.use_global_undo = False
    _renderer = (key, TrainingViewRenderer(RenderSettings.from_dict(settings), bpy.context.scene))
    return _renderer[1]


def render_object(settings: dict, out_dir: str, staging_dir: str, log_dir: str, object_id: str, source: str,
                  is_uid: bool, objaverse_cache: str | None) -> tuple[str, str | None]:
    """The Ray task body: renders and publishes one object. Returns ("done", None), ("failed", reason) for an
    object that cannot be rendered, or ("fatal", reason) when the scene cannot be set up (a run-wide problem)."""
    import traceback

    from blender_addon.core.render_staging import remove_abandoned

    try:
        renderer = _renderer_for(settings, log_dir)
    except Exception as error:  # noqa: BLE001 - reported to the driver, which stops the run
        traceback.print_exc()
        return "fatal", " ".join(str(error).split()) or type(error).__name__
    remove_abandoned(staging_dir)  # what killed tasks left (never a live task's folder)
    from blender_addon.core.render_plan import verify_object_folder

    if verify_object_folder(os.path.join(out_dir, object_id), renderer.settings, object_id) is None:
        return "done", None  # a retry of an attempt killed after it had published the whole object
    return render_one_object(renderer, object_id, source, is_uid, objaverse_cache, out_dir, staging_dir)


class RayRenderer:
    """Renders items as Ray tasks; ``run`` yields a RenderResult per item (same contract as RenderPool.run)."""

    def __init__(self, address: str, concurrency: int, settings: dict, out_dir: str, staging_dir: str, log_dir: str,
                 time_limit_s: float, retries: int, objaverse_cache: str | None = None):
        self.address, self.concurrency = address, concurrency
        self.settings, self.out_dir, self.staging_dir, self.log_dir = settings, out_dir, staging_dir, log_dir
        self.time_limit_s, self.retries, self.objaverse_cache = time_limit_s, retries, objaverse_cache

    def _connect(self):
        hide_unusable_pyarrow()
        try:
            import ray
        except ImportError:
            raise WorkerStartError(
                "--ray needs Ray: pip install 'isotropic3d-blender[training]' (or pip install ray)"
            ) from None
        options = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                       runtime_env={"worker_process_setup_hook": "training.render_ray.hide_unusable_pyarrow"})
        try:
            if self.address == "local":
                ray.init(num_cpus=self.concurrency, **options)
            else:
                ray.init(address=self.address, **options)
        except Exception as error:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
            raise WorkerStartError(f"cannot start or reach Ray at {self.address}: {' '.join(str(error).split())}") \
                from None
        gpus = 1 if self.settings.get("device") == "gpu" else 0
        return ray, ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(render_object)

    def run(self, items: list[RenderItem]):
        ray, task = self._connect()
        queue = deque((item, 0) for item in items)  # (item, attempts made)
        in_flight: dict = {}  # ObjectRef -> (item, attempt, submitted at)
        try:
            while queue or in_flight:
                while queue and len(in_flight) < self.concurrency:
                    item, attempts = queue.popleft()
                    ref = task.remote(self.settings, self.out_dir, self.staging_dir, self.log_dir, item.object_id,
                                      item.source, item.is_objaverse_uid, self.objaverse_cache)
                    in_flight[ref] = (item, attempts + 1, time.monotonic())
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_S)
                now = time.monotonic()
                for ref in ready:
                    item, attempt, submitted = in_flight.pop(ref)
                    try:
                        kind, reason = ray.get(ref)
                    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                            ray.exceptions.RayActorError, ray.exceptions.TaskCancelledError,
                            ray.exceptions.ObjectLostError) as error:
                        kind, reason = "crashed", f"the render worker died ({type(error).__name__})"
                    except ray.exceptions.RayTaskError as error:
                        kind, reason = "failed", " ".join(str(error.cause or error).split())
                    if kind == "fatal":
                        raise WorkerStartError(reason)
                    if kind == "crashed" and attempt <= self.retries:
                        queue.appendleft((item, attempt))
                        continue
                    if kind == "crashed":
                        reason = f"{reason}; gave up after {attempt} attempt(s)"
                    yield RenderResult(item, now - submitted, reason)
                for ref, (item, attempt, submitted) in list(in_flight.items()):
                    if now - submitted > self.time_limit_s:
                        ray.cancel(ref, force=True)  # kills the worker process: its staging lock goes with it
                        del in_flight[ref]
                        yield RenderResult(item, now - submitted,
                                           f"timed out: still rendering after the time limit of {self.time_limit_s:g} s")
        finally:
            for ref in in_flight:
                ray.cancel(ref, force=True)
            ray.shutdown()
