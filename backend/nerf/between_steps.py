"""The trainer's periodic work kept off the step path: one background task of a kind in flight at a time, and the
copy of the optimisation state a background checkpoint write saves.

At a step boundary the trainer takes what the work needs from the device (a snapshot of every tensor of the state;
the density grid and a copy of the field for a mesh), so the result is that of the step it was taken at, and hands
the CPU part (``torch.save`` + the atomic write; marching cubes, clean-up, colours, the PLY) to a thread. The next
task of the kind waits for the previous one; a task's error is kept and raised where its result is collected.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from blender_addon.core.atomic_files import open_atomically


class OneInFlight:
    """At most one background task at a time: ``submit`` waits for the previous one (whose result or error is then
    ``collect``-ed by the caller first), ``ready`` says whether the running one has finished, ``wait`` joins it and
    returns its result or raises its error (once)."""

    def __init__(self, name: str):
        self.name = name
        self._thread: threading.Thread | None = None
        self._result: Any = None
        self._error: BaseException | None = None

    @property
    def pending(self) -> bool:
        return self._thread is not None

    def ready(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def submit(self, task: Callable[[], Any]) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: the previous task was not collected")

        def run() -> None:
            try:
                self._result = task()
            except BaseException as error:  # noqa: BLE001 - kept, raised where the result is collected
                self._error = error

        self._result, self._error = None, None
        self._thread = threading.Thread(target=run, name=f"iso3d-{self.name}", daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait until the task in flight (if any) has ended; its result stays for ``wait``."""
        if self._thread is not None:
            self._thread.join()

    def wait(self) -> Any:
        """The finished task's result (None when none was pending); its error is raised here."""
        if self._thread is None:
            return None
        self._thread.join()
        self._thread = None
        result, error = self._result, self._error
        self._result = self._error = None
        if error is not None:
            raise error
        return result


class StateSnapshot:
    """Copies of a nested state (dicts, lists, tuples of tensors and plain values) in host memory, taken at the
    step boundary. The host buffers (pinned when the tensors are on a GPU) are reused from one snapshot to the next
    where shapes and dtypes match: the caller waits for the previous write before taking a new snapshot."""

    def __init__(self):
        self._buffers: dict[str, torch.Tensor] = {}

    def take(self, state: Any, device: torch.device) -> Any:
        """The copy of ``state`` (every tensor copied; the device synchronised once at the end)."""
        copied = self._copy(state, "", device.type == "cuda")
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the non-blocking copies into pinned memory have landed
        return copied

    def _copy(self, value: Any, key: str, pin: bool) -> Any:
        if isinstance(value, torch.Tensor):
            value = value.detach()
            buffer = self._buffers.get(key)
            if buffer is None or buffer.shape != value.shape or buffer.dtype != value.dtype:
                buffer = torch.empty(value.shape, dtype=value.dtype, pin_memory=pin and value.is_cuda)
                self._buffers[key] = buffer
            buffer.copy_(value, non_blocking=value.is_cuda and buffer.is_pinned())
            return buffer
        if isinstance(value, dict):
            return {name: self._copy(item, f"{key}/{name}", pin) for name, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._copy(item, f"{key}/{index}", pin) for index, item in enumerate(value))
        return value


class CheckpointWriter:
    """Checkpoints written by a background thread through the one atomic helper: ``submit`` copies the state off
    the device (after waiting for the previous write) and starts the write; ``on_disk_step`` is the step of the
    last write that finished."""

    def __init__(self, path: Path, device: torch.device):
        self.path = path
        self.device = device
        self.on_disk_step: int | None = None
        self._writes = OneInFlight("checkpoint")
        self._snapshot = StateSnapshot()

    def ready(self) -> bool:
        return self._writes.ready()

    def submit(self, state: dict) -> None:
        self.wait()
        snapshot = self._snapshot.take(state, self.device)
        path = self.path

        def write() -> int:
            with open_atomically(path) as handle:  # creates the folder; a failed write leaves no partial file
                torch.save(snapshot, handle)
            return int(snapshot["step"])

        self._writes.submit(write)

    def wait(self) -> None:
        """Return once the write in flight (if any) is on disk; raises its error."""
        step = self._writes.wait()
        if step is not None:
            self.on_disk_step = step


class BackgroundMesh:
    """Intermediate meshes: ``start`` takes the density grid and a copy of the field at the step boundary and
    runs the rest (``mesh_from_grid``, the PLY) in a thread; ``collect`` returns its MeshUpdate (None while it is
    not ready, unless ``wait``; None for an empty surface). The copy runs eager: where the run's field is compiled
    (CUDA) its colours may differ from the compiled field's by float rounding; the geometry comes from the run's
    field itself."""

    def __init__(self, path: Path):
        self.path = path
        self._work = OneInFlight("mesh")
        self._field_copy = None  # a second RadianceField, loaded with the field's state at each start

    def collectable(self, wait: bool) -> bool:
        """Whether ``collect(wait)`` would return the work in flight (joining it when ``wait``)."""
        return self._work.pending and (wait or self._work.ready())

    def start(self, field, field_config, mesh_config, step: int) -> None:
        from backend.events import MeshUpdate
        from backend.nerf.field import RadianceField
        from backend.nerf.mesh import density_grid, export_mesh, mesh_from_grid

        if self._work.pending:
            raise RuntimeError("the previous intermediate mesh was not collected")
        m = mesh_config
        grid = density_grid(field, m.preview_resolution, m.chunk_points)
        if self._field_copy is None:
            with torch.random.fork_rng(devices=[]):  # its initial weights must not draw from the run's RNG
                self._field_copy = RadianceField(field_config).to(next(field.parameters()).device)
            self._field_copy.mlp_autocast_dtype = field.mlp_autocast_dtype  # the run's MLP precision (CUDA)
        self._field_copy.load_state_dict(field.state_dict())  # ordered before the next step's updates
        field_copy, path = self._field_copy, self.path

        def finish():
            mesh = mesh_from_grid(grid, field_copy, m.density_threshold, m.min_component_fraction, m.chunk_points)
            if mesh.is_empty:
                return None
            export_mesh(mesh, path)
            return MeshUpdate(mesh.vertices, mesh.faces, mesh.vertex_colors, step)

        self._work.submit(finish)

    def join(self) -> None:
        """Wait until the mesh in flight has left the GPU (and ended); its event stays to be collected."""
        self._work.join()

    def collect(self, wait: bool):
        if self.collectable(wait):
            return self._work.wait()
        return None

    def drain(self) -> None:
        """Join the work in flight, its result and error dropped (the run has already ended)."""
        try:
            self._work.wait()
        except Exception:  # noqa: BLE001 - the run ended with its own event or error
            pass
