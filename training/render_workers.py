"""Render worker processes: each holds one bpy scene (``TrainingViewRenderer``) and renders object after object.

The driver (``RenderPool``) hands one object at a time to each idle worker over a pipe and enforces the per-object
time limit by killing a worker that overruns; a killed or crashed worker is replaced by a fresh one and its object
is recorded as failed with the reason. Workers never print to the driver's terminal: their stdout/stderr (Blender's
render log) go to a log file per worker slot.

Workers never outlive the driver: on Linux each asks the kernel for SIGKILL when its parent dies
(``PR_SET_PDEATHSIG``), and every worker also checks its parent between objects and exits when it is gone (a
SIGKILL or SIGTERM of the driver alone, a crash, a preempted job). Together with the staging locks
(``blender_addon.core.render_staging``) a re-run can never remove a folder a live worker writes or publish a partial one.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait

from .render_inputs import RenderItem

# Seconds a worker may take to import bpy and set up its scene before the driver gives up on it.
WORKER_START_TIMEOUT_S = 300.0


@dataclass
class RenderResult:
    """The outcome of one object: ``reason`` is None when it rendered."""

    item: RenderItem
    seconds: float
    reason: str | None = None


def redirect_output(log_path: str):
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int):
    """Asks the kernel to SIGKILL this process when its parent dies (Linux), and exits now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def worker_main(connection, settings: dict, out_dir: str, staging_dir: str, log_path: str, objaverse_cache,
                parent_pid: int | None = None):
    """Entry point of a worker process: set up the scene once, then render the objects it is sent.

    Messages to the driver: ("ready", None), ("done", seconds), ("failed", reason), ("fatal", reason).
    """
    if parent_pid is not None:
        die_with_parent(parent_pid)
    redirect_output(log_path)
    try:
        import bpy

        from blender_addon.dataset_render import TrainingViewRenderer
        from blender_addon.core.render_plan import RenderSettings
        from blender_addon.core.render_staging import remove_abandoned

        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.context.preferences.edit.use_global_undo = False
        renderer = TrainingViewRenderer(RenderSettings.from_dict(settings), bpy.context.scene)
    except Exception as error:  # noqa: BLE001 - reported to the driver, which stops the run
        traceback.print_exc()
        connection.send(("fatal", " ".join(str(error).split()) or type(error).__name__))
        return
    connection.send(("ready", None))
    while True:
        try:
            task = connection.recv()
        except EOFError:
            return
        if task is None or (parent_pid is not None and os.getppid() != parent_pid):
            return
        object_id, source, is_uid = task
        remove_abandoned(staging_dir)  # what a killed or timed-out worker left (never a live worker's folder)
        started = time.perf_counter()
        status, reason = render_one_object(renderer, object_id, source, is_uid, objaverse_cache, out_dir,
                                           staging_dir)
        connection.send((status, time.perf_counter() - started if status == "done" else reason))


def render_one_object(renderer, object_id: str, source: str, is_uid: bool, objaverse_cache, out_dir: str,
                      staging_dir: str) -> tuple[str, str | None]:
    """Renders and publishes one object (an Objaverse UID is downloaded first) with a worker's renderer, for the
    pool's workers and the Ray tasks alike: ("done", None) or ("failed", reason). An unexpected error fails this
    object only; its traceback goes to the worker's log."""
    from blender_addon.dataset_render import ObjectRenderError

    print(f"--- {object_id}: {source}", flush=True)
    try:
        path = source
        if is_uid:
            from .objaverse_source import download

            path = download(source, objaverse_cache)
        renderer.render_file(path, object_id, out_dir, staging_dir)
        return "done", None
    except ObjectRenderError as error:
        return "failed", str(error)
    except Exception as error:  # noqa: BLE001 - any other error fails this object only
        traceback.print_exc()
        return "failed", f"{type(error).__name__}: {' '.join(str(error).split())}"


class _Slot:
    """One worker process and the object it is rendering."""

    def __init__(self, index: int):
        self.index = index
        self.process = None
        self.connection = None
        self.ready = False
        self.started_at = 0.0
        self.item: RenderItem | None = None
        self.item_started = 0.0


class WorkerStartError(RuntimeError):
    """A worker could not set up its render scene; the message is the reason (a run-wide problem)."""


class RenderPool:
    """``workers`` render processes fed from a queue of items; ``run`` yields a RenderResult per item."""

    def __init__(self, workers: int, settings: dict, out_dir: str, staging_dir: str, log_dir: str,
                 time_limit_s: float, objaverse_cache: str | None = None):
        self.context = multiprocessing.get_context("spawn")
        self.settings, self.out_dir, self.staging_dir = settings, out_dir, staging_dir
        self.log_dir, self.time_limit_s, self.objaverse_cache = log_dir, time_limit_s, objaverse_cache
        self.slots = [_Slot(k) for k in range(workers)]

    def _start(self, slot: _Slot):
        parent, child = self.context.Pipe()
        log_path = os.path.join(self.log_dir, f"worker-{slot.index}.log")
        slot.process = self.context.Process(
            target=worker_main,
            args=(child, self.settings, self.out_dir, self.staging_dir, log_path, self.objaverse_cache, os.getpid()),
            name=f"iso3d-render-worker-{slot.index}",
            daemon=True,
        )
        slot.process.start()
        child.close()
        slot.connection, slot.ready, slot.item = parent, False, None
        slot.started_at = time.monotonic()

    def _stop(self, slot: _Slot):
        if slot.process is not None and slot.process.is_alive():
            slot.process.kill()
        if slot.process is not None:
            slot.process.join()
        if slot.connection is not None:
            slot.connection.close()
        slot.process = slot.connection = None

    def run(self, items: list[RenderItem]):
        """Renders ``items``; yields RenderResults in completion order. Raises WorkerStartError when workers
        cannot start at all. Workers are always stopped when the generator ends or is closed."""
        queue = deque(items)
        pending = len(items)
        for slot in self.slots[: max(1, min(len(self.slots), pending))]:
            self._start(slot)
        try:
            while pending:
                active = [slot for slot in self.slots if slot.process is not None]
                for slot in active:
                    if slot.ready and slot.item is None and queue:
                        slot.item = queue.popleft()
                        slot.item_started = time.monotonic()
                        slot.connection.send((slot.item.object_id, slot.item.source, slot.item.is_objaverse_uid))
                waitables = [slot.connection for slot in active] + [slot.process.sentinel for slot in active]
                ready = wait(waitables, timeout=0.25)
                now = time.monotonic()
                for slot in active:
                    result = None
                    if slot.connection in ready:
                        try:
                            kind, value = slot.connection.recv()
                        except (EOFError, OSError):
                            kind, value = "died", None
                        if kind == "ready":
                            slot.ready = True
                        elif kind == "fatal":
                            raise WorkerStartError(value)
                        elif kind in ("done", "failed") and slot.item is not None:
                            seconds = now - slot.item_started
                            result = RenderResult(slot.item, seconds, None if kind == "done" else value)
                            slot.item = None
                        elif kind == "died":
                            result = self._replace_dead(slot, now)
                    elif slot.process.sentinel in ready and not slot.process.is_alive():
                        result = self._replace_dead(slot, now)
                    elif slot.item is not None and now - slot.item_started > self.time_limit_s:
                        result = RenderResult(
                            slot.item, now - slot.item_started,
                            f"timed out: still rendering after the time limit of {self.time_limit_s:g} s",
                        )
                        self._stop(slot)
                        self._start(slot)
                    elif not slot.ready and now - slot.started_at > WORKER_START_TIMEOUT_S:
                        raise WorkerStartError(f"a render worker did not start within {WORKER_START_TIMEOUT_S:g} s")
                    if result is not None:
                        pending -= 1
                        yield result
        finally:
            for slot in self.slots:
                self._stop(slot)

    def _replace_dead(self, slot: _Slot, now: float) -> RenderResult | None:
        exit_code = slot.process.exitcode if slot.process is not None else None
        if slot.process is not None:
            slot.process.join(timeout=5)
            exit_code = slot.process.exitcode
        item = slot.item
        if item is None and not slot.ready:
            raise WorkerStartError(
                f"a render worker exited during start-up (exit code {exit_code}); see "
                f"{os.path.join(self.log_dir, f'worker-{slot.index}.log')}"
            )
        self._stop(slot)
        self._start(slot)
        if item is None:
            return None
        return RenderResult(item, now - slot.item_started, f"the render worker crashed (exit code {exit_code})")
