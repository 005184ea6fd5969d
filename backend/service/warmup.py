"""The service's warm-up: right after start, before the first job, the job worker runs the preview path once on a
blank image so that compilation (torch.compile, CUDA graphs, cuDNN autotuning) is paid before an artist waits for
it. ``welcome`` says where it stands (``warmup``: ``off``, ``running``, ``ready`` or ``failed``); jobs submitted
meanwhile wait behind it in the queue and their clients see ``progress`` with phase ``warmup``. A failed warm-up
is logged and changes nothing else: the first job then compiles as it would have without one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("iso3d.server")

WARMUP_STATES = ("off", "running", "ready", "failed")
# Denoising steps of the warm-up preview: torch.compile with CUDA graphs records its graph on the second or third
# call of the same shapes, so three calls leave the replayable graph behind.
WARMUP_STEPS = 3


class Warmup:
    """``run(report)`` in the job worker; ``state`` read by the socket loop (a str assignment is atomic)."""

    def __init__(self, model, enabled: bool):
        self.model = model
        self.state = "running" if enabled else "off"
        self.seconds: float | None = None

    def run(self, report: Callable[[int, int, float], None]) -> None:
        """Run the preview path once; ``report(step, total, elapsed_seconds)`` after each denoising step."""
        if self.state != "running":
            return
        started = time.perf_counter()
        try:
            self._preview(report, started)
        except Exception:  # the service works without a warm-up; the log has the traceback
            log.exception("the warm-up failed; the first job compiles instead")
            self.state = "failed"
            return
        self.seconds = time.perf_counter() - started
        log.info("warm-up done in %.1f s", self.seconds)
        self.state = "ready"

    def _preview(self, report: Callable[[int, int, float], None], started: float) -> None:
        import torch

        from backend.diffusion.preview import PreviewSettings, run_preview
        from backend.events import Progress

        size = 256  # the side run_preview expects (backend.imaging.prepare_preview_image)
        blank = torch.ones(1, 3, size, size)  # white, in [-1, 1]
        settings = PreviewSettings(steps=WARMUP_STEPS)  # default views: the shapes of a default preview
        for event in run_preview(self.model, blank, settings):
            if isinstance(event, Progress):
                report(event.step, event.total, time.perf_counter() - started)
