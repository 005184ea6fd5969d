"""One conditioning image: a generate job of the service and `iso3d generate` given the same file condition the model
on the same CLIP embedding, the one of backend.imaging.prepare_condition_image (not the preview's preparation)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from backend.imaging import load_image, prepare_condition_image, prepare_preview_image
from backend.nerf.trainer import CHECKPOINT_NAME

pytestmark = pytest.mark.integration

ANSWER_S, JOB_S = 60, 300  # a tiny-model backend on a loaded 2-core machine (tests/service/test_server.py)
# The smallest run that writes a checkpoint: one step of the tiny preset at 24^2, a 16^3 final mesh.
SETTINGS = {"preset": "tiny", "run.steps": 1, "run.mesh_every": 0, "run.views_every": 0,
            "phases.resolution_before": 24, "phases.resolution_after": 24, "mesh.resolution": 16}


def cut_out_png() -> bytes:
    """A 300x300 RGBA cut-out whose transparent background carries colour: the two preparations differ on it."""
    rng = np.random.default_rng(5)
    rgba = np.zeros((300, 300, 4), np.uint8)
    rgba[..., :3] = rng.integers(0, 256, (300, 300, 3))  # coloured, fully transparent background
    yy, xx = np.mgrid[:300, :300]
    disc = (yy - 150) ** 2 + (xx - 140) ** 2 < 90**2
    rgba[disc] = (200, 60, 30, 255)
    rgba[disc & (xx > 170), 3] = 128  # a half-transparent part
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def test_service_generate_job_and_cli_condition_on_the_same_embedding(serve_in_process, connect, tiny_model,
                                                                     tmp_path):
    png = cut_out_png()
    path = tmp_path / "input.png"
    path.write_bytes(png)

    server = serve_in_process()
    client = connect(server.address)
    client.submit("generate", png, SETTINGS)
    messages = []
    accepted = client.wait_for(lambda m: m.type in ("accepted", "error"), ANSWER_S, messages)
    assert accepted.type == "accepted", accepted.fields
    job = accepted.get("job")
    final = client.wait_for(lambda m: m.type in ("done", "error") and m.get("job") == job, JOB_S, messages)
    assert final.type == "done", final.fields
    service_context = torch.load(server.data / "jobs" / job / "work" / CHECKPOINT_NAME, weights_only=True)["context"]

    from backend.cli import main as iso3d

    out = tmp_path / "cli" / "asset.ply"
    options = [f"--{key}" if key != "preset" else "--preset" for key in SETTINGS]
    argv = ["generate", str(path), "--model", "tiny", "--device", "cpu", "--quiet", "--out", str(out)]
    for option, value in zip(options, SETTINGS.values()):
        argv += [option, str(value)]
    assert iso3d(argv) == 0
    cli_context = torch.load(out.with_name("asset.job") / CHECKPOINT_NAME, weights_only=True)["context"]

    expected = tiny_model.encode_image(prepare_condition_image(load_image(path))).float()
    # Same weights (tiny, seed 0), same input tensor, both on the CPU: equal up to float32 summation order
    # (thread counts may differ between the server's thread and the CLI), far below the gap checked below.
    torch.testing.assert_close(service_context, cli_context, rtol=0, atol=1e-5)
    torch.testing.assert_close(cli_context, expected, rtol=0, atol=1e-5)
    preview_embedding = tiny_model.encode_image(prepare_preview_image(load_image(path))).float()
    assert (preview_embedding - expected).abs().max() > 1e-3  # the preview preparation would have been told apart
