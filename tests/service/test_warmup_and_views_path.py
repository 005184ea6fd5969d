"""The service's warm-up (welcome says running, then ready; a job submitted meanwhile waits behind it and completes)
and the path of the views and mesh messages (sent before they are stored; a service that dies in between loses
nothing: the job runs again on restart). In-process servers with the tiny model on real loopback sockets and real files."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from backend.events import MeshUpdate, Views
from blender_addon.core.client import decode_array
from tests.helpers.backend import EXAMPLE_PNG
from tests.service.test_warmup_parts import TINY_GENERATE

pytestmark = pytest.mark.integration

# Deadlines for a tiny-model backend on a loaded 2-core machine (as in test_server.py): an immediate answer within a
# minute, a short job within five.
ANSWER_S = 60
JOB_S = 300


def welcome_warmup(client) -> str:
    client.hello()
    return client.wait_for(lambda m: m.type == "welcome", ANSWER_S).get("warmup")


def test_warmup_runs_first_and_a_preview_submitted_meanwhile_completes(serve_in_process, connect, tiny_model,
                                                                        monkeypatch):
    # The warm-up of the tiny model on the CPU takes well under a second; a gate on the model's image encoder (the
    # real encoder runs once the gate opens) holds it in "running" long enough to submit a job behind it.
    gate = threading.Event()
    encode = tiny_model.encode_image

    def gated_encode(image):
        assert gate.wait(JOB_S), "the test never opened the gate"
        return encode(image)

    monkeypatch.setattr(tiny_model, "encode_image", gated_encode)
    backend = serve_in_process(warmup=True, warmup_generate_settings=TINY_GENERATE)
    client = connect(backend.address)
    assert welcome_warmup(client) == "running"
    client.submit("preview", EXAMPLE_PNG, {"steps": 2})
    messages = []
    accepted = client.wait_for(lambda m: m.type in ("accepted", "error"), ANSWER_S, messages)
    assert accepted.type == "accepted" and accepted.get("position") == 1, accepted.fields
    gate.set()
    job = accepted.get("job")
    client.wait_for(lambda m: m.type in ("done", "error") and m.get("job") == job, JOB_S, messages)
    phases = [m.get("phase") for m in messages if m.type == "progress"]
    warmup = ["warmup: generate"] * 6 + ["warmup"] * 3  # 3 SDS steps of each phase, then the preview path
    assert phases == warmup + ["queued", "denoise", "denoise"] or phases == warmup + ["denoise", "denoise"], phases
    assert [m.type for m in messages][-2:] == ["views", "done"]
    assert welcome_warmup(client) == "ready"
    assert backend.server.warmup.seconds is not None and backend.server.warmup.seconds > 0


def test_no_warmup_by_default(backend, connect):
    """A server built without ``warmup`` (``iso3d serve --no-warmup`` or ``--compile off``) says "off"."""
    assert welcome_warmup(connect(backend.address)) == "off"


def test_views_are_sent_before_they_are_stored_and_a_death_in_between_loses_nothing(serve_in_process, connect,
                                                                                      tmp_path, monkeypatch):
    backend = serve_in_process()
    store = backend.server.store
    stored = threading.Event()
    release = threading.Event()
    record_event = store.record_event

    def held_record_event(record, event):
        if isinstance(event, Views):
            assert release.wait(JOB_S), "the test never released the views' storing"
        record_event(record, event)
        if isinstance(event, Views):
            stored.set()

    monkeypatch.setattr(store, "record_event", held_record_event)
    client = connect(backend.address)
    client.submit("preview", EXAMPLE_PNG, {"steps": 2, "seed": 4})
    messages = []
    job = client.wait_for(lambda m: m.type == "accepted", ANSWER_S, messages).get("job")
    # the views arrive while storing them is still held: they did not wait for the disk
    views = client.wait_for(lambda m: m.type == "views", JOB_S, messages)
    assert not stored.is_set()
    directory = store.root / job
    assert not (directory / "views" / "latest.npz").exists()
    # the service dying now leaves this folder behind (the worker is held, nothing else writes)
    died = tmp_path / "died"
    shutil.copytree(backend.data, died, ignore=shutil.ignore_patterns("*.lock", "lock"))
    release.set()
    client.wait_for(lambda m: m.type in ("done", "error") and m.get("job") == job, JOB_S, messages)
    assert messages[-1].type == "done" and stored.is_set()
    assert (directory / "views" / "latest.npz").is_file()

    # the restarted service finds the job unfinished, runs it again and replays the same views
    restarted = serve_in_process(data=died)
    client = connect(restarted.address)
    client.attach(job)
    replayed = []
    client.wait_for(lambda m: m.type in ("done", "error") and m.get("job") == job, JOB_S, replayed)
    assert replayed[-1].type == "done", replayed[-1].fields
    again = [m for m in replayed if m.type == "views"]
    assert again and again[-1].payloads == views.payloads  # same seed, same model: the same images


# a tiny generate job with an intermediate mesh at step 1 (the untrained field holds density 2 from the start) and a
# final one at step 2, every render at 16^2 so that it takes seconds on a CPU
MESH_JOB = {"preset": "tiny", "run.steps": 2, "run.mesh_every": 1, "run.views_every": 0, "run.checkpoint_every": 1000,
            "run.turntable_views": 2, "run.views_resolution": 16, "phases.resolution_before": 16,
            "phases.resolution_after": 16, "mesh.preview_resolution": 16, "mesh.resolution": 16,
            "mesh.density_threshold": 2.0}


def test_meshes_are_sent_before_they_are_stored(serve_in_process, connect, monkeypatch):
    backend = serve_in_process()
    store = backend.server.store
    release = threading.Event()
    stored_faces = []  # the faces of mesh_latest.npz right after each mesh was stored (the job's thread holds)
    record_event = store.record_event

    def held_record_event(record, event):
        if isinstance(event, MeshUpdate):
            assert release.wait(JOB_S), "the test never released the mesh's storing"
        record_event(record, event)
        if isinstance(event, MeshUpdate):
            with np.load(store.root / record.id / "mesh_latest.npz") as data:
                stored_faces.append(data["faces"].copy())

    monkeypatch.setattr(store, "record_event", held_record_event)
    client = connect(backend.address)
    client.submit("generate", EXAMPLE_PNG, MESH_JOB)
    messages = []
    job = client.wait_for(lambda m: m.type == "accepted", ANSWER_S, messages).get("job")
    # the intermediate mesh arrives while storing it is still held: it did not wait for the disk
    mesh = client.wait_for(lambda m: m.type == "mesh", JOB_S, messages)
    assert mesh.get("step") == 1 and not mesh.get("final")
    assert not stored_faces and not (store.root / job / "mesh_latest.npz").exists()
    release.set()
    client.wait_for(lambda m: m.type in ("done", "error") and m.get("job") == job, JOB_S, messages)
    assert messages[-1].type == "done", messages[-1].fields
    # then stored, the mesh that was sent; the final one after it, before the job's done
    assert len(stored_faces) == 2 and np.array_equal(stored_faces[0], decode_array(mesh, 1))
    final = [m for m in messages if m.type == "mesh" and m.get("final")]
    assert len(final) == 1 and np.array_equal(stored_faces[1], decode_array(final[0], 1))
