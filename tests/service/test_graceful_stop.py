"""Graceful stop and the lock across real processes (issue 14, items 5 and 7): SIGTERM makes the running generate
job save its checkpoint before the service exits, and a restart resumes from it; a second `iso3d serve` on the same
data folder is refused, naming the holder."""

from __future__ import annotations

import json

import pytest
import torch

from backend.nerf.trainer import CHECKPOINT_NAME
from tests.helpers.backend import EXAMPLE_PNG, BackendProcess
from tests.helpers.processes import python, run

# Two backend starts and a few CPU generate steps: about 3 minutes on a loaded 2-core machine, so in the slow lane.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A tiny generate job on the CPU whose own checkpoints come too rarely to matter (every 1000 steps): whatever is
# saved at SIGTERM was saved by the graceful stop.
SETTINGS = {"preset": "tiny", "run.steps": 200, "run.checkpoint_every": 1000, "run.mesh_every": 0,
            "run.views_every": 0, "phases.resolution_before": 24, "phases.resolution_after": 24}
ANSWER_S, JOB_S = 60, 300


def test_sigterm_checkpoints_the_running_job_and_a_restart_resumes_it(tmp_path, connect):
    backend = BackendProcess(tmp_path / "data").start()
    try:
        second = run(python("-m", "backend.cli", "serve", "--model", "tiny", "--device", "cpu", "--data",
                            tmp_path / "data", "--bind", "tcp://127.0.0.1:0"), timeout=ANSWER_S * 5)
        assert second.returncode == 2 and f"pid {backend.process.pid}" in second.stderr, second.stderr
        client = connect(backend.address)
        client.submit("generate", EXAMPLE_PNG, SETTINGS)
        job = client.wait_for(lambda m: m.type in ("accepted", "error"), ANSWER_S).get("job")
        reached = client.wait_for(lambda m: m.type == "progress" and m.get("job") == job and m.get("step", 0) >= 3,
                                  JOB_S).get("step")
        assert backend.stop() == 0  # SIGTERM: exits cleanly once the job has saved its state
    finally:
        backend.stop()
    folder = tmp_path / "data" / "jobs" / job
    saved = torch.load(folder / "work" / CHECKPOINT_NAME, weights_only=True)["step"]
    assert saved >= reached  # nothing done before the stop was thrown away
    record = json.loads((folder / "job.json").read_text())
    assert record["status"] == "queued" and record["crashes"] == 0  # a graceful stop is not a crash
    with backend.restarted().start():
        client.attach(job)
        messages = []
        client.wait_for(lambda m: m.type == "progress" and m.get("job") == job and m.get("step", 0) > saved, JOB_S,
                        messages)
        live = [m.get("step") for m in messages if m.type == "progress"][1:]  # after the replayed state
        assert live[0] == saved + 1  # resumed from the checkpoint, not from step 0
        client.cancel(job)
        client.wait_for(lambda m: m.type == "error" and m.get("job") == job, JOB_S)
