"""Resuming a cancelled generate job (issue 13): cancel saves the trainer's checkpoint at the step it stopped, the
job lists as resumable, ``resume`` puts it back into the queue with the same id and folder, and it runs on from the
saved step (not from 0) to done with a final mesh, streaming to every client that follows it. Every refusal is an
``error`` in words, and the service goes on. In-process server on a real loopback socket, real files."""

from __future__ import annotations

import json

import pytest
import torch

from backend.nerf.trainer import CHECKPOINT_NAME
from tests.helpers.backend import EXAMPLE_PNG

pytestmark = pytest.mark.integration

# A tiny generate job on the CPU: its own checkpoints too rare to matter (so what is saved at cancel was saved by
# the cancel), no intermediate meshes or views, a small final mesh (the density threshold of the add-on's generate
# tests gives the untrained field a surface).
STEPS = 8
SETTINGS = {"preset": "tiny", "run.steps": STEPS, "run.checkpoint_every": 1000, "run.mesh_every": 0,
            "run.views_every": 0, "phases.resolution_before": 24, "phases.resolution_after": 24,
            "mesh.resolution": 32, "mesh.density_threshold": 2.0}
ANSWER_S, JOB_S = 60, 300  # a loaded 2-core machine (tests/helpers/waiting.py)


def job_events(job):
    return lambda m: m.get("job") == job


def submit(client, kind="generate", settings=None) -> str:
    client.submit(kind, EXAMPLE_PNG, settings or SETTINGS)
    accepted = client.wait_for(lambda m: m.type in ("accepted", "error"), ANSWER_S)
    assert accepted.type == "accepted", accepted.fields
    return accepted.get("job")


def refused(client, job: str) -> tuple[str, str]:
    client.resume(job)
    error = client.wait_for(lambda m: m.type in ("error", "accepted") and m.get("job") in (job, None), ANSWER_S)
    assert error.type == "error", error.fields
    return error.get("code"), error.get("message")


def listed(client) -> dict[str, dict]:
    client.list_jobs()
    return {j["job"]: j for j in client.wait_for(lambda m: m.type == "jobs", ANSWER_S).get("jobs")}


def test_a_cancelled_generate_job_resumes_from_its_saved_step_to_done(serve_in_process, connect, tmp_path):
    backend = serve_in_process(tmp_path / "data")
    client = connect(backend.address)
    watcher = connect(backend.address)  # another Blender following the same job
    job = submit(client)
    client.wait_for(lambda m: m.type == "progress" and m.get("job") == job and m.get("step", 0) >= 2, JOB_S)
    code, message = refused(client, job)  # still running
    assert code == "not_resumable" and "is running; only a cancelled job can be resumed" in message
    client.cancel(job)
    stopped = client.wait_for(lambda m: m.type in ("error", "done") and m.get("job") == job, JOB_S)
    assert stopped.type == "error" and stopped.get("code") == "cancelled", stopped.fields
    folder = tmp_path / "data" / "jobs" / job
    saved = torch.load(folder / "work" / CHECKPOINT_NAME, weights_only=True)["step"]
    assert 2 <= saved < STEPS
    summary = listed(client)[job]
    assert summary["status"] == "cancelled" and summary["resumable"] is True and summary["step"] == saved
    watcher.attach(job)
    watcher.wait_for(lambda m: m.type == "error" and m.get("code") == "cancelled", ANSWER_S)

    request = client.resume(job)
    accepted = client.wait_for(lambda m: m.type in ("accepted", "error"), ANSWER_S)
    assert accepted.type == "accepted" and accepted.get("job") == job, accepted.fields
    assert accepted.get("request") == request  # the answer to this resume (an attach's has none)
    streamed, seen = [], []
    client.wait_for(lambda m: m.type in ("done", "error") and m.get("job") == job, JOB_S, streamed)
    watcher.wait_for(lambda m: m.type in ("done", "error") and m.get("job") == job, JOB_S, seen)
    assert streamed[-1].type == "done", streamed[-1].fields
    steps = [m.get("step") for m in streamed if m.type == "progress" and m.get("phase") == "sds"]
    assert steps == list(range(saved + 1, STEPS + 1))  # on from the saved step, not from 0
    assert [m.get("step") for m in seen if m.type == "progress" and m.get("phase") == "sds"] == steps
    final = [m for m in streamed if m.type == "mesh" and m.get("final")]
    assert len(final) == 1 and final[0].get("step") == STEPS and len(final[0].payloads[1]) > 0
    artifacts = {a["name"] for a in streamed[-1].get("artifacts")}
    assert {"mesh.glb", "mesh.obj", "mesh.ply"} <= artifacts
    record = json.loads((folder / "job.json").read_text())
    assert record["status"] == "done" and record["runs"] == 2 and record["error_code"] == ""
    assert listed(client)[job]["resumable"] is False
    code, message = refused(client, job)
    assert code == "not_resumable" and f"job {job} is done" in message


def test_resume_refusals_in_words_and_a_job_failed_by_interruptions(serve_in_process, connect, tmp_path):
    backend = serve_in_process(tmp_path / "data")
    client = connect(backend.address)
    assert refused(client, "0123456789abcdef")[0] == "unknown_job"
    assert refused(client, "../../etc")[0] == "unknown_job"
    # two jobs cancelled while they wait behind a running generate job (before they saved anything)
    running = submit(client)
    preview = submit(client, "preview", {"steps": 2})
    waiting = submit(client)
    for job in (preview, waiting):
        client.cancel(job)
        client.wait_for(lambda m: m.type == "error" and m.get("job") == job and m.get("code") == "cancelled", JOB_S)
    code, message = refused(client, preview)
    assert code == "not_resumable" and "only generate jobs can be resumed" in message
    code, message = refused(client, waiting)
    assert code == "not_resumable" and "has no saved state" in message
    client.wait_for(lambda m: m.type == "progress" and m.get("job") == running and m.get("step", 0) >= 1, JOB_S)
    client.cancel(running)
    client.wait_for(lambda m: m.type == "error" and m.get("job") == running, JOB_S)
    assert {j: s["resumable"] for j, s in listed(client).items()} == {running: True, preview: False, waiting: False}
    backend.stop()
    # on a restarted service: a job made with another model (that model's backend resumes it; this one says so),
    # and one the service died under too often (``--max-crashes``), as JobQueue.start leaves it: failed "crashed",
    # its checkpoint kept; a person resumes it, with a fresh retry budget
    folders = tmp_path / "data" / "jobs"
    edits = {waiting: {"model": "isotropic3d (published)"},
             running: {"status": "failed", "error_code": "crashed", "error_message": "failed: crashed 3 times",
                       "crashes": 3}}
    for job, changes in edits.items():
        record = json.loads((folders / job / "job.json").read_text())
        (folders / job / "job.json").write_text(json.dumps({**record, **changes}))
    saved = torch.load(folders / running / "work" / CHECKPOINT_NAME, weights_only=True)["step"]
    backend = serve_in_process(tmp_path / "data")
    client = connect(backend.address)
    code, message = refused(client, waiting)
    assert code == "needs_model" and "'isotropic3d (published)'" in message and "restart the backend" in message
    assert listed(client)[running]["resumable"] is True
    client.resume(running)
    streamed = []
    client.wait_for(lambda m: m.type in ("done", "error") and m.get("job") == running, JOB_S, streamed)
    assert streamed[-1].type == "done", streamed[-1].fields
    steps = [m.get("step") for m in streamed if m.type == "progress" and m.get("phase") == "sds"]
    assert steps == list(range(saved + 1, STEPS + 1))
    assert json.loads((folders / running / "job.json").read_text())["crashes"] == 0
