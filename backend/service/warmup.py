"""The service's warm-up: right after start, before the first job, the job worker runs a few SDS steps of a generate
job (the guidance UNet at the generate batch, the VAE encoder forward and backward, the field and the renderer, at
each phase's shapes; the trainer's memory plan measured at those shapes, kept for the process by
backend.nerf.memory_measure; the run's views and an intermediate mesh) and then the preview path once on a blank
image, so that compilation (torch.compile, CUDA graphs, cuDNN autotuning) is paid before an artist waits for it. The
preview comes last: its CUDA graphs are the latest recorded when the first (latency-bound) preview arrives.
``welcome`` says where it stands (``warmup``: ``off``, ``running``, ``ready`` or ``failed``); jobs submitted
meanwhile wait behind it in the queue and their clients see ``progress`` with phase ``warmup: generate`` (the SDS
steps) then ``warmup`` (the preview). A failed generate part is logged and skipped (``parts`` says why); a failed
preview part makes the warm-up ``failed``. Either way nothing else changes: the first job then compiles as it would
have without one.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable

log = logging.getLogger("iso3d.server")

WARMUP_STATES = ("off", "running", "ready", "failed")
# Denoising steps of the warm-up preview, and SDS steps of each generate phase: torch.compile with CUDA graphs
# records its graph on the second or third call of the same shapes, so three calls leave the replayable graph behind.
WARMUP_STEPS = 3
PREVIEW_PHASE = "warmup"
GENERATE_PHASE = "warmup: generate"

# report(phase, step, total, elapsed seconds)
Report = Callable[[str, int, int, float], None]


class Warmup:
    """``run(report)`` in the job worker; ``state`` read by the socket loop (a str assignment is atomic).

    ``generate_settings``: the wire settings of the generate job whose SDS steps are warmed (default: the default
    preset's, what a generate job without settings runs); ``max_gpu_memory``: the service's cap (GiB, 0: none);
    ``preview_views``: views of the warm-up preview (default: a default preview's, the shapes the first preview
    runs; tests that check the warm-up's bookkeeping ask for one view, a quarter of the CPU decode)."""

    def __init__(self, model, enabled: bool, generate_settings: dict | None = None, max_gpu_memory: float = 0.0,
                 preview_views: int | None = None):
        self.model = model
        self.state = "running" if enabled else "off"
        self.generate_settings = dict(generate_settings or {})
        self.max_gpu_memory = max_gpu_memory
        self.preview_views = preview_views
        self.seconds: float | None = None
        self.parts: dict[str, float | str] = {}  # seconds of each part warmed, or why it was skipped

    def run(self, report: Report) -> None:
        """Warm the generate steps, then the preview path; ``report`` after each step of either."""
        if self.state != "running":
            return
        started = time.perf_counter()
        try:
            self._generate(report, started)
        except Exception as error:  # generate jobs work without it; the log has the traceback
            log.exception("the generate warm-up failed; the first generate job compiles instead")
            self.parts["generate"] = f"failed: {type(error).__name__}: {error}"[:300]
        finally:
            _free_memory()
        try:
            part_started = time.perf_counter()
            self._preview(report, started)
            self.parts["preview"] = round(time.perf_counter() - part_started, 2)
        except Exception:  # the service works without a warm-up; the log has the traceback
            log.exception("the warm-up failed; the first job compiles instead")
            self.state = "failed"
            return
        finally:
            _free_memory()
        self.seconds = time.perf_counter() - started
        log.info("warm-up done in %.1f s (%s)", self.seconds, self.parts)
        self.state = "ready"

    def _preview(self, report: Report, started: float) -> None:
        import torch

        from backend.diffusion.preview import PreviewSettings, run_preview
        from backend.events import Progress

        size = 256  # the side run_preview expects (backend.imaging.prepare_preview_image)
        blank = torch.ones(1, 3, size, size)  # white, in [-1, 1]
        settings = PreviewSettings(steps=WARMUP_STEPS)  # default views: the shapes of a default preview
        if self.preview_views is not None:
            settings.num_views = self.preview_views
        for event in run_preview(self.model, blank, settings):
            if isinstance(event, Progress):
                report(PREVIEW_PHASE, event.step, event.total, time.perf_counter() - started)

    def _generate(self, report: Report, started: float) -> None:
        """WARMUP_STEPS real SDS steps at the start of each phase of the generate settings, then the run's views and
        one intermediate mesh (nothing is written but a temporary folder, removed after)."""
        import torch

        from backend.nerf.trainer import GenerationError, SDSTrainer, condition_context
        from backend.service.job_kinds import capped_generate_config

        part_started = time.perf_counter()
        config = capped_generate_config(self.generate_settings, self.max_gpu_memory)
        steps = config.run.steps
        switch = math.ceil(config.phases.switch_at * steps)
        starts = [start for start in dict.fromkeys((0, switch)) if start < steps]  # each phase's first step
        total = len(starts) * WARMUP_STEPS
        device = self.model.device
        context = condition_context(self.model, torch.ones(1, 3, 256, 256, device=device))  # a blank image's
        with tempfile.TemporaryDirectory(prefix="iso3d-warmup-") as workdir:
            try:
                trainer = SDSTrainer(config, self.model, context, workdir, device)
            except GenerationError as error:  # e.g. the default preset does not fit the service's memory cap
                self.parts["generate"] = f"skipped: {error.message}"
                log.warning("generate warm-up skipped: %s", error.message)
                return
            done = 0
            for start in starts:
                trainer.step = start
                for _ in range(WARMUP_STEPS):
                    try:
                        trainer.train_step()
                    except GenerationError as error:  # a blank image's non-finite loss: compiled all the same
                        if error.code != "nan_loss":
                            raise
                        trainer.step += 1
                    done += 1
                    report(GENERATE_PHASE, done, total, time.perf_counter() - started)
            # what a job's early steps run besides the steps, compiling on first use otherwise (the field without
            # gradient at the views' and the mesh's shapes): the views at views_every, an intermediate mesh
            if config.run.views_every:
                trainer.render_views()
            if config.run.mesh_every:
                trainer.meshes.start(trainer.field, config.field, config.mesh, trainer.step)
                trainer.meshes.collect(wait=True)
            trainer.vae_encoder.release()  # the encoder's CUDA graphs: each job records its own
            del trainer
        self.parts["generate"] = round(time.perf_counter() - part_started, 2)


def _free_memory() -> None:
    """What the warm-up allocated goes back to the device (the jobs' own caching allocator starts from it). Only
    where there is such a cache: a full collection of a process holding torch costs ~0.4 CPU s, and on the CPU
    what the warm-up dropped is freed without one."""
    import gc

    import torch

    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()
