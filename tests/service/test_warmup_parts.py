"""The warm-up runs real SDS steps of each generate phase (the guidance UNet at the generate batch, the VAE encoder
forward and backward) and then the preview path, reporting each under its own phase; a generate part that cannot
fit the service's memory cap, or fails, is skipped with the reason, the preview part still counts. Tiny model, CPU."""

from __future__ import annotations

import logging

import pytest

from backend.service.warmup import GENERATE_PHASE, PREVIEW_PHASE, WARMUP_STEPS, Warmup

# The 'tiny' preset at 16^2 renders: both phases' shapes, cheap on a loaded 2-core CPU.
TINY_GENERATE = {"preset": "tiny", "phases.resolution_before": 16, "phases.resolution_after": 16}
# A one-view warm-up preview: these tests check the warm-up's parts, order and reports, which do not depend on the
# views; four 256^2 views cost ~2 CPU s of VAE decode a warm-up. The server's default-view warm-up preview runs in
# tests/service/test_warmup_and_views_path.py.
VIEWS = 1


# slow: a whole warm-up (~5 s); the default run keeps the other warm-up tests and the service's warm-up test
@pytest.mark.slow
def test_the_warmup_runs_the_preview_then_each_generate_phase_and_reports_both(tiny_model, monkeypatch):
    from backend.diffusion import sds

    batches = []  # the guidance calls the warm-up made: (renders' batch, latent input side, gradient kept)
    call = sds.SDSGuidance.__call__

    def counted(self, renders, *args, **kwargs):
        output = call(self, renders, *args, **kwargs)
        batches.append((renders.shape[0], self.config.latent_resolution_input, output.loss.requires_grad))
        return output

    monkeypatch.setattr(sds.SDSGuidance, "__call__", counted)
    from backend.nerf.between_steps import BackgroundMesh
    from backend.nerf.trainer import SDSTrainer

    extras = []  # the run's views and intermediate mesh (what a job's first mesh point runs), each real
    render_views, start_mesh = SDSTrainer.render_views, BackgroundMesh.start
    monkeypatch.setattr(SDSTrainer, "render_views", lambda self, *a, **k: extras.append("views") or render_views(
        self, *a, **k))
    monkeypatch.setattr(BackgroundMesh, "start", lambda self, *a, **k: extras.append("mesh") or start_mesh(
        self, *a, **k))
    reports = []
    warmup = Warmup(tiny_model, True, TINY_GENERATE, preview_views=VIEWS)
    warmup.run(lambda phase, step, total, elapsed: reports.append((phase, step, total)))
    assert warmup.state == "ready", warmup.parts
    assert reports == [(GENERATE_PHASE, step, 2 * WARMUP_STEPS) for step in range(1, 2 * WARMUP_STEPS + 1)] + \
        [(PREVIEW_PHASE, step, WARMUP_STEPS) for step in range(1, WARMUP_STEPS + 1)]
    # the 'tiny' preset renders 1 object x 4 views in both phases, encoded at 64^2 with gradient (the VAE backward)
    assert batches == [(4, 64, True)] * (2 * WARMUP_STEPS)
    assert extras == ["views", "mesh"]  # after the steps, once each
    assert isinstance(warmup.parts["preview"], float) and isinstance(warmup.parts["generate"], float)
    assert warmup.seconds >= warmup.parts["generate"] + warmup.parts["preview"] - 0.02  # rounded to 10 ms each


def test_a_generate_warmup_that_does_not_fit_the_cap_is_skipped_with_its_reason(tiny_model, caplog):
    reports = []
    warmup = Warmup(tiny_model, True, TINY_GENERATE, max_gpu_memory=0.001, preview_views=VIEWS)  # GiB: nothing fits
    with caplog.at_level(logging.WARNING, logger="iso3d.server"):
        warmup.run(lambda phase, step, total, elapsed: reports.append(phase))
    assert warmup.state == "ready"  # the preview path is warm
    assert reports == [PREVIEW_PHASE] * WARMUP_STEPS
    assert warmup.parts["generate"].startswith("skipped: ") and "GiB" in warmup.parts["generate"]
    assert "generate warm-up skipped" in caplog.text


def test_a_warmup_that_is_off_runs_nothing(tiny_model):
    warmup = Warmup(tiny_model, False, TINY_GENERATE)
    warmup.run(lambda *args: (_ for _ in ()).throw(AssertionError("reported")))
    assert warmup.state == "off" and warmup.parts == {}


def test_a_generate_warmup_that_fails_is_skipped_and_the_preview_is_still_warmed(tiny_model):
    reports = []
    # its settings refuse: the part fails
    warmup = Warmup(tiny_model, True, {"preset": "no such preset"}, preview_views=VIEWS)
    warmup.run(lambda phase, step, total, elapsed: reports.append(phase))
    assert warmup.state == "ready"
    assert reports == [PREVIEW_PHASE] * WARMUP_STEPS
    assert warmup.parts["generate"].startswith("failed: ") and "no such preset" in warmup.parts["generate"]
