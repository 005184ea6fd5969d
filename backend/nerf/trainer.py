"""The SDS optimisation of the field: a generator of typed events (backend.events), with checkpoint and resume.

One ``update_step(step)`` call per step carries the schedules to every module (guidance timestep range, shading
phase, render phase, orientation weight, occupancy grid). All randomness of step k comes from generators seeded with
(seed, k), and the global RNG (used inside nerfacc) is forked and seeded the same way, so a run resumed from a
checkpoint continues exactly as an uninterrupted one.

Work folder (``workdir``): ``config.json``, ``checkpoint.pt`` (the latest good optimisation state, replaced
atomically), ``mesh_latest.ply`` (the latest intermediate mesh), and at the end ``mesh.glb``, ``mesh.obj``,
``mesh.ply`` and ``turntable.png``. Nothing there is overwritten by a failing run's state.

Periodic work off the step path (backend.nerf.between_steps): a checkpoint's state is copied off the device at the
step boundary and written by a background thread (one write in flight; whatever needs the file on disk waits for
it, and a failed write becomes a ``checkpoint_failed`` Failed event); an intermediate mesh's density grid and a copy
of the field are taken at the boundary, its marching cubes, clean-up, colours and ``mesh_latest.ply`` run in a
thread, and its MeshUpdate (carrying the step it was taken at) is yielded at the first step boundary after it is
ready, in step order.

On CUDA the steps are pipelined: a step's losses are read (``StepLosses``) once the next step is queued, so the host
hands one step's events on while the GPU runs the next; a non-finite loss skips its update on the device and stops
the run when it is read. Work that takes the state at a step boundary is done with nothing queued after it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from backend.diffusion.cameras import (DEFAULT_CAMERA_ENCODING, ViewCameras, make_view_cameras, orbit_azimuths,
                                     random_multiview_cameras)
from backend.diffusion.precision import guidance_autocast_dtype, overflow_hint
from backend.diffusion.sds import LatentEncoder, SDSGuidance, SDSOutput, vae_latent_encoder
from backend.device_copies import to_device
from backend.events import Done, Event, Failed, MeshUpdate, Progress, Views
from backend.imaging import save_views_grid
from backend.nerf.between_steps import BackgroundMesh, CheckpointWriter
from backend.nerf.field import run_field
from backend.nerf.memory import GIB, MemoryPlan, plan_memory, refusal
from backend.nerf.mesh import Mesh, export_mesh, extract_mesh
from backend.nerf.presets import GenerateConfig, validate
from backend.nerf.renderer import VolumeRenderer
from backend.nerf.shading import ALBEDO, PointLightShading
from backend.nerf.step_encoder import StepEncoder
from backend.profiling import Laps, region
from blender_addon.core.atomic_files import write_json_atomically

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"
LATEST_MESH_NAME = "mesh_latest.ply"
FINAL_MESH_NAMES = ("mesh.glb", "mesh.obj", "mesh.ply")
TURNTABLE_NAME = "turntable.png"
CHECKPOINT_FORMAT = 1


class GenerationError(Exception):
    """A failure with a short ``code`` and a human-readable message (becomes a ``Failed`` event)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _linear(start: float, end: float, step: int, until_step: float) -> float:
    if until_step <= 0:
        return end
    return start + (end - start) * min(max(step / until_step, 0.0), 1.0)


@dataclass
class StepPlan:
    """What ``update_step`` decided for one step."""

    objects: int
    resolution: int
    lambda_orient: float


LOSS_NAMES = ("loss", "sds", "orient", "t")


class StepLosses(Mapping):
    """One step's losses ({"loss", "sds", "orient", "t"} -> float), read from the device when first asked for.

    On CUDA the step queues a copy of its four values into pinned host memory and an event after it, so the host
    goes on to the next step without waiting for this one; reading the values waits for this step's work only.
    A non-finite loss raises GenerationError when the values are read (``failure`` makes it); the optimiser's
    update of that step was skipped on the device (``found_inf``), so the weights stay the last good ones."""

    def __init__(self, step: int, values: torch.Tensor, failure: Callable[[int, float], GenerationError]):
        self.step = step  # the step these are of (steps done before it)
        self._failure = failure
        self._values: list[float] | None = None
        if values.device.type == "cuda":
            self._host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            self._host.copy_(values, non_blocking=True)
            self._ready = torch.cuda.Event()
            self._ready.record()
        else:
            self._values = values.tolist()

    def values(self) -> dict[str, float]:
        if self._values is None:
            self._ready.synchronize()
            self._values = self._host.tolist()
        if not math.isfinite(self._values[0]):
            raise self._failure(self.step, self._values[0])
        return dict(zip(LOSS_NAMES, self._values))

    def __getitem__(self, name: str) -> float:
        return self.values()[name]

    def __iter__(self):
        return iter(LOSS_NAMES)

    def __len__(self) -> int:
        return len(LOSS_NAMES)


class SDSTrainer:
    """Optimises a RadianceField by SDS for one image's conditioning ``context`` [1, T, D]."""

    def __init__(self, config: GenerateConfig, model, context: torch.Tensor, workdir: str | Path,
                 device: str | torch.device = "cpu", latent_encoder: LatentEncoder | None = None):
        validate(config)
        self.config = config
        self.model = model
        self.device = torch.device(device)
        self.workdir = Path(workdir)
        self.context = context.detach().to(self.device)
        self.total_steps = config.run.steps
        laps = Laps()  # the construction's parts (ms): a warm service's job set-up (backend.service.job_kinds)
        torch.manual_seed(config.run.seed)  # initial weights come from the seed
        self.field = run_field(config.field, self.device, config.run.mixed_precision)
        self.field.encoding.check_device(self.device)
        self.renderer = VolumeRenderer(config.renderer, config.field.radius, self.device)
        laps("field")
        self.memory = self._plan_memory()
        laps("memory_plan")
        self.shading = PointLightShading(config.shading, self.total_steps)
        self.meshes = BackgroundMesh(self.workdir / LATEST_MESH_NAME)
        self.vae_encoder = StepEncoder(model, before_capture=self.meshes.join)
        encoder = latent_encoder or vae_latent_encoder(model.vae, self.vae_encoder)
        self.guidance = SDSGuidance(model.unet, model.alphas_cumprod, encoder, config.guidance, self.total_steps,
                                    getattr(model, "camera_encoding", DEFAULT_CAMERA_ENCODING))
        o = config.optimizer  # fused on CUDA: one kernel a parameter group (a fast step is bound by its launches)
        # On CUDA the fused AdamW also skips a step whose loss is not finite on the device (``found_inf``, as
        # under a GradScaler), so the host need not read the loss before queueing the update (StepLosses).
        self.guard_on_device = self.device.type == "cuda"
        # ``run`` reports each step once the next is queued (StepLosses): on CUDA, where the host would otherwise
        # wait for each step's end before queueing the next; on the CPU every step is synchronous anyway
        self.pipelined = self.guard_on_device
        self.optimizer = torch.optim.AdamW(
            [{"params": self.field.grid_parameters(), "lr": o.lr_grid},
             {"params": self.field.mlp_parameters(), "lr": o.lr_mlp}],
            betas=o.betas, eps=o.eps, weight_decay=o.weight_decay, fused=self.guard_on_device or None)
        self.step = 0  # the next step to run
        self.elapsed_before = 0.0  # seconds spent in earlier sessions of this run
        self.checkpoints = CheckpointWriter(self.workdir / CHECKPOINT_NAME, self.device)
        self.plan = StepPlan(config.phases.objects_before, config.phases.resolution_before, 0.0)
        laps("guidance_and_optimizer")
        self.setup_ms = laps.ms

    def _plan_memory(self) -> MemoryPlan | None:
        """Measure what the run needs; refuse it if it cannot fit its cap, else set the renderer's budgets and cap
        the allocator (CUDA) so that nothing else in the process takes the run past ``run.max_gpu_memory``."""
        cap = self.config.run.max_gpu_memory
        if self.device.type != "cuda" and cap <= 0:
            return None
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            plan = plan_memory(self.config, self.model, self.device, self.field)
            if not plan.fits:
                raise GenerationError("not_enough_memory",
                                      refusal(self.config, plan, self.model, self.device, None))
        self.renderer.density_chunk = plan.density_chunk  # the sample budget is set per phase (update_step)
        if self.device.type == "cuda":  # process-wide: an uncapped run lifts an earlier run's cap
            total = torch.cuda.get_device_properties(self.device).total_memory / GIB
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            torch.cuda.set_per_process_memory_fraction(min(cap / total, 1.0) if cap > 0 else 1.0, index)
        return plan

    # -- schedules -----------------------------------------------------------------------------------------------
    def update_step(self, step: int) -> StepPlan:
        """Carry step ``step``'s schedules to every module."""
        c = self.config
        steps = self.total_steps
        self.guidance.update_step(step)
        self.shading.update_step(step)
        self.renderer.update_grid(step, self.field)
        before = step < c.phases.switch_at * steps
        phase = self.memory.phase(1 if before else 2) if self.memory is not None else None
        if phase is not None:
            self.renderer.sample_budget = phase.sample_budget
            self.vae_encoder.checkpoint_views = phase.vae_checkpoint_views
        self.plan = StepPlan(
            objects=c.phases.objects_before if before else c.phases.objects_after,
            resolution=c.phases.resolution_before if before else c.phases.resolution_after,
            lambda_orient=_linear(c.loss.lambda_orient_start, c.loss.lambda_orient_end, step,
                                  c.loss.orient_until * steps),
        )
        return self.plan

    def _step_seed(self, step: int) -> int:
        return (self.config.run.seed * 1_000_003 + step * 7919) % (2**63 - 1)

    # -- one optimisation step -----------------------------------------------------------------------------------
    def train_step(self) -> StepLosses:
        """Queue step ``self.step``; returns its losses (read from the device when first asked for). A non-finite
        loss raises GenerationError: on the CPU here, on CUDA when the losses are read."""
        step = self.step
        seed = self._step_seed(step)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            cpu_generator = torch.Generator().manual_seed(seed)
            generator = cpu_generator if self.device.type == "cpu" else torch.Generator(self.device).manual_seed(seed)
            plan = self.update_step(step)
            losses = self._optimise(plan, cpu_generator, generator)
        self.step = step + 1
        return losses

    def _optimise(self, plan: StepPlan, cpu_generator, generator) -> StepLosses:
        c = self.config
        views = c.cameras.views_per_object
        cameras = random_multiview_cameras(plan.objects, views, cpu_generator, c.cameras.elevation_range,
                                           c.cameras.azimuth_range, c.cameras.fovy_range,
                                           c.cameras.relative_radius_range)
        lighting = self.shading.sample(cameras.c2w[:, :3, 3], views, cpu_generator)
        with_normals = plan.lambda_orient > 0 or lighting.needs_normals
        out = self.renderer.render_views(self.field, cameras, plan.resolution, plan.resolution, lighting,
                                         stratified=True, generator=generator, with_normals=with_normals)
        renders = out.rgb.permute(0, 3, 1, 2)
        codes = to_device(cameras.codes(self.guidance.camera_encoding), self.device)
        weights_dtype = self.guidance.weights_dtype
        autocast_dtype = guidance_autocast_dtype(weights_dtype) if self.device.type == "cuda" and \
            c.run.mixed_precision else None
        with torch.autocast(self.device.type, dtype=autocast_dtype or weights_dtype, enabled=autocast_dtype is not None):
            sds = self.guide(renders, cameras, lighting, codes, generator)
        loss = c.loss.lambda_sds * sds.loss.float()
        orient = torch.zeros((), device=self.device)
        if with_normals:
            orient = out.orientation.sum() / (out.opacity > 0).sum().clamp(min=1)
            loss = loss + plan.lambda_orient * orient
        with region("optimizer"):
            self.optimizer.zero_grad(set_to_none=True)
        with region("backward"):
            loss.backward()
        values = torch.stack([loss.detach().float(), sds.loss.detach().float(), orient.detach().float(),
                              torch.as_tensor(sds.timestep, device=self.device).float()])
        dtype = autocast_dtype or weights_dtype

        def failure(step: int, value: float) -> GenerationError:
            return GenerationError("nan_loss", f"the loss became {value} at step {step}; optimisation stopped"
                                   + overflow_hint(dtype) + self._kept_note())

        losses = StepLosses(self.step, values, failure)
        if self.guard_on_device:  # no host synchronisation: the update is skipped on the device if need be
            self.optimizer.found_inf = (~torch.isfinite(values[0])).float()
        else:  # CPU: the values are read now (free); a non-finite loss stops before the optimiser's step
            losses.values()
        with region("optimizer"):
            self.optimizer.step()
        return losses

    def guide(self, renders: torch.Tensor, cameras: ViewCameras, lighting, codes: torch.Tensor,
              generator) -> SDSOutput:
        """The guidance loss of one step's renders [N, 3, H, W] in [0, 1] seen from ``cameras`` under
        ``lighting`` (bench/trajectory.py's target guidance replaces this to make the field form a known object)."""
        return self.guidance(renders, self.context, codes, self.config.cameras.views_per_object, generator)

    def _kept_note(self) -> str:
        try:
            self.wait_for_checkpoint()
        except GenerationError:
            pass  # the write's own failure is reported where it is collected; this names what is on disk
        if self.last_checkpoint_step is None:
            return " (no checkpoint had been written yet)"
        return f"; the last good checkpoint (step {self.last_checkpoint_step}) is kept in {self.workdir}"

    # -- outputs -------------------------------------------------------------------------------------------------
    def eval_cameras(self, count: int = 4) -> ViewCameras:
        c = self.config.cameras
        azimuths = orbit_azimuths(count)
        return make_view_cameras([c.eval_elevation] * count, azimuths, c.eval_distance, c.eval_fovy)

    @torch.no_grad()
    def render_views(self, count: int = 4, resolution: int | None = None) -> Views:
        """Albedo renders of the field from the evaluation cameras (white background)."""
        cameras = self.eval_cameras(count)
        size = resolution or self.config.run.views_resolution
        with region("views"):
            out = self.renderer.render_views(self.field, cameras, size, size, ALBEDO, with_normals=False)
            images = (out.rgb.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
        return Views("render", images, cameras.elevation.tolist(), cameras.azimuth.tolist(),
                     cameras.c2w.cpu().numpy(), step=self.step)

    def extract_mesh(self, resolution: int | None = None) -> Mesh:
        """The final mesh (coarse-to-fine at ``mesh.resolution`` x ``mesh.refinement``), or with ``resolution`` a
        cheap single-pass one (intermediate meshes)."""
        m = self.config.mesh
        with region("mesh"):
            return extract_mesh(self.field, resolution or m.resolution, m.density_threshold,
                                m.min_component_fraction, m.chunk_points, refinement=1 if resolution else m.refinement)

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "step": self.step, "field": self.field.state_dict(),
                "grid": self.renderer.grid_state(), "optimizer": self.optimizer.state_dict(),
                "context": self.context.cpu(), "config": self.config.to_dict(), "elapsed": self.elapsed_before,
                "model": getattr(self.model, "name", type(self.model).__name__)}

    @property
    def last_checkpoint_step(self) -> int | None:
        """The step of the checkpoint on disk (a write still in flight is not counted)."""
        return self.checkpoints.on_disk_step

    def save_checkpoint(self, elapsed: float = 0.0, wait: bool = True) -> Path | None:
        """Save the state atomically; a state with non-finite weights is not saved (the last good one stays).

        The state is copied off the device now (the step boundary) and written by a background thread; ``wait``
        returns once it is on disk. A failed write raises GenerationError here or where it is next waited for."""
        self.wait_for_checkpoint()  # one write in flight: its failure is reported before a new one starts
        with region("checkpoint"):
            # one device synchronisation for every parameter (not one each)
            if not bool(torch.stack([torch.isfinite(p).all() for p in self.field.parameters()]).all()):
                return None
            state = self.state_dict()
            state["elapsed"] = self.elapsed_before + elapsed
            self.checkpoints.submit(state)
        if wait:
            self.wait_for_checkpoint()
        return self.checkpoints.path

    def wait_for_checkpoint(self) -> None:
        """Return once the checkpoint write in flight (if any) is on disk; its failure raises GenerationError."""
        try:
            self.checkpoints.wait()
        except Exception as error:  # noqa: BLE001 - any failure of the write is said as checkpoint_failed
            raise GenerationError("checkpoint_failed", f"could not write the checkpoint {self.checkpoints.path}: "
                                  f"{error}" + self._kept_note()) from None

    def load_checkpoint(self, path: str | Path) -> None:
        path = Path(path)
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as error:  # noqa: BLE001 - a damaged file raises many types; said as bad_checkpoint
            raise GenerationError("bad_checkpoint", f"cannot read checkpoint {path}: {error}") from None
        if state.get("format") != CHECKPOINT_FORMAT:
            raise GenerationError("bad_checkpoint", f"{path} is not a generation checkpoint of this version")
        self.field.load_state_dict(state["field"])
        self.renderer.load_grid_state(state["grid"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.context = state["context"].to(self.device)
        self.step = int(state["step"])
        self.elapsed_before = float(state.get("elapsed", 0.0))
        self.checkpoints.on_disk_step = self.step

    # -- the run -------------------------------------------------------------------------------------------------
    def run(self, cancel: threading.Event | Callable[[], bool] | None = None,
            mesh_requested: threading.Event | None = None) -> Iterator[Event]:
        """Optimise from ``self.step`` to the end, yielding events; ends with Done or Failed."""
        run = self.config.run
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self.workdir / CONFIG_NAME, self.config.to_dict(), indent=2)
        cancelled = (cancel.is_set if isinstance(cancel, threading.Event) else cancel) or (lambda: False)
        start_time = time.perf_counter()
        start_step = self.step

        def reported(losses: StepLosses) -> Iterator[Event]:
            """A queued step's Progress (its losses read: a non-finite one raises) and what is ready by then."""
            step = losses.step + 1  # steps done
            values = losses.values()
            elapsed = time.perf_counter() - start_time
            eta = elapsed / (step - start_step) * (self.total_steps - step)
            yield Progress("sds", step, self.total_steps, self.elapsed_before + elapsed, eta, values)
            yield from self._collect_mesh(wait=False)
            if self.checkpoints.ready():
                self.wait_for_checkpoint()  # a finished write: its failure is reported now, not later

        # ``pipelined``: steps are reported one behind, step k's Progress made once step k + 1 is queued, so the GPU
        # runs k + 1 while the host reads k's losses and hands its events on. Work that takes the state at a step
        # boundary (views, an intermediate mesh, a checkpoint, a cancel) is done with nothing queued after that step.
        pending: StepLosses | None = None
        try:
            while self.step < self.total_steps:
                if cancelled():
                    if pending is not None:
                        yield from reported(pending)
                    yield from self._collect_mesh(wait=True)
                    self.save_checkpoint(time.perf_counter() - start_time)
                    yield Failed("cancelled", f"cancelled at step {self.step}; state saved in {self.workdir}")
                    return
                losses = self.train_step()
                if pending is not None:
                    yield from reported(pending)
                pending = losses
                if not self.pipelined:
                    yield from reported(pending)
                    pending = None
                step = self.step  # steps done
                views_due = bool(run.views_every and step % run.views_every == 0)
                wants_mesh = mesh_requested is not None and mesh_requested.is_set()
                mesh_due = bool(run.mesh_every and step % run.mesh_every == 0 and step < self.total_steps) or wants_mesh
                checkpoint_due = bool(run.checkpoint_every and step % run.checkpoint_every == 0)
                if not (views_due or mesh_due or checkpoint_due):
                    continue
                if pending is not None:
                    yield from reported(pending)
                    pending = None
                if views_due:
                    yield self.render_views()
                if mesh_due:
                    if mesh_requested is not None:
                        mesh_requested.clear()
                    yield from self._collect_mesh(wait=True)  # one in flight; events in step order
                    self._start_intermediate_mesh(step)
                if checkpoint_due:
                    self.save_checkpoint(time.perf_counter() - start_time, wait=False)
            if pending is not None:
                yield from reported(pending)
            yield from self._collect_mesh(wait=True)
            self._final_checkpoint(time.perf_counter() - start_time)
            yield from self._finish(start_time)
        except GenerationError as error:
            yield Failed(error.code, error.message)
        except torch.OutOfMemoryError:
            yield Failed("out_of_memory",
                         f"the GPU ran out of memory at step {self.step}: try the 'draft' preset or lower "
                         f"phases.resolution_after / phases.objects_before" + self._kept_note())
        finally:  # a closed or failed run leaves no write half-done behind it, nor CUDA graphs
            self.meshes.drain()
            self.vae_encoder.release()
            try:
                self.checkpoints.wait()
            except Exception:  # noqa: BLE001 - the run already ended with its own event or error
                pass

    def _start_intermediate_mesh(self, step: int) -> None:
        """The device part now (the density grid, a copy of the field for the colours); the rest in a thread."""
        with region("mesh"):
            self.meshes.start(self.field, self.config.field, self.config.mesh, step)

    def _collect_mesh(self, wait: bool) -> Iterator[MeshUpdate]:
        """The background mesh's event, when it is ready (``wait``: once it is)."""
        event = self.meshes.collect(wait)
        if event is not None:
            yield event

    def _final_checkpoint(self, elapsed: float) -> None:
        self.save_checkpoint(elapsed, wait=False)  # written while the final mesh is made; Done waits for it

    def _finish(self, start_time: float) -> Iterator[Event]:
        total = self.total_steps
        yield Progress("mesh", total, total, self.elapsed_before + time.perf_counter() - start_time, None, {})
        mesh = self.extract_mesh()
        if mesh.is_empty:
            raise GenerationError(
                "empty_mesh", f"no surface at density {self.config.mesh.density_threshold}: the field is empty "
                "(lower mesh.density_threshold or run more steps)" + self._kept_note())
        artifacts = self._export_final(mesh)
        yield MeshUpdate(mesh.vertices, mesh.faces, mesh.vertex_colors, total, final=True)
        views = self._turntable()
        artifacts[TURNTABLE_NAME] = str(self.workdir / TURNTABLE_NAME)
        yield views
        self.wait_for_checkpoint()
        artifacts[CHECKPOINT_NAME] = str(self.workdir / CHECKPOINT_NAME)
        yield Done(artifacts)

    def _export_final(self, mesh: Mesh) -> dict[str, str]:
        return {name: str(export_mesh(mesh, self.workdir / name)) for name in FINAL_MESH_NAMES}

    def _turntable(self) -> Views:
        views = self.render_views(self.config.run.turntable_views)
        save_views_grid(views.images, self.workdir / TURNTABLE_NAME)
        return views


def condition_context(model, image: torch.Tensor) -> torch.Tensor:
    """The conditioning context [1, 1, D] of an image [1, 3, 256, 256] in [-1, 1] (white background)."""
    return model.encode_image(image).float()


def generate(model, config: GenerateConfig, workdir: str | Path, image: torch.Tensor | None = None,
             device: str | torch.device = "cpu", resume: bool = False,
             cancel: threading.Event | Callable[[], bool] | None = None,
             mesh_requested: threading.Event | None = None, latent_encoder: LatentEncoder | None = None,
             setup_ms: dict[str, float] | None = None) -> Iterator[Event]:
    """Image -> events (progress, renders, meshes) -> Done with mesh.glb/.obj/.ply and turntable.png in
    ``workdir``. ``resume``: continue from ``workdir``'s checkpoint (the image is then optional). Errors become
    one Failed event; earlier outputs stay on disk. ``setup_ms`` gets the set-up's parts in ms (condition, then
    SDSTrainer.setup_ms's) before the first step runs."""
    laps = Laps(setup_ms)
    try:
        workdir = Path(workdir)
        checkpoint = workdir / CHECKPOINT_NAME
        if resume and not checkpoint.is_file():
            raise GenerationError("no_checkpoint", f"nothing to resume: {checkpoint} does not exist")
        if not resume and image is None:
            raise GenerationError("no_image", "an input image is needed")
        context = condition_context(model, image.to(device)) if image is not None and not resume else None
        if context is None:  # the real context comes from the checkpoint
            context = torch.zeros(1, 1, 1)
        laps("condition")
        trainer = SDSTrainer(config, model, context, workdir, device, latent_encoder)
        laps.ms.update(trainer.setup_ms)
        if resume:
            trainer.load_checkpoint(checkpoint)
    except GenerationError as error:
        yield Failed(error.code, error.message)
        return
    except ValueError as error:
        yield Failed("bad_settings", str(error))
        return
    yield from trainer.run(cancel, mesh_requested)
