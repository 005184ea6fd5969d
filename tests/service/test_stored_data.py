"""Stored data can never take the service down, and the disk stays under control (issue 14, items 2, 4, 5, 6, 7):
job folders written as earlier releases or a damaged disk would leave them, read by an in-process server."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from backend.errors import UserError
from backend.service.job_store import JobRecord, JobStore
from backend.service.retention import prune
from tests.helpers.backend import EXAMPLE_PNG


def write_job(data: Path, job_id: str, **fields) -> Path:
    """A job folder as the service writes it (``fields`` override the record)."""
    record = asdict(JobRecord(id=job_id, kind="preview", settings={"steps": 1}, status="done"))
    record.update(fields)
    folder = data / "jobs" / job_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.json").write_text(json.dumps(record))
    (folder / "input.png").write_bytes(EXAMPLE_PNG)
    return folder


@pytest.mark.integration  # an in-process server on a real socket
def test_damaged_and_oversized_stored_jobs_are_listed_never_fatal(serve_in_process, connect, tmp_path):
    data = tmp_path / "data"
    for index in range(50):  # names of 200 non-ASCII characters made every later hello crash the service
        write_job(data, f"{index:016x}", name="ø" * 200, created=1000.0 + index)
    write_job(data, "a" * 16).joinpath("job.json").write_text('{"id": "aaaaaaaaaaaaaaaa", "kind": "prev')
    write_job(data, "b" * 16, step="seven")  # a wrongly typed field stopped the service from starting
    mesh_job = write_job(data, "c" * 16, mesh_step=3)
    (mesh_job / "mesh_latest.npz").write_bytes(b"PK\x03\x04 truncated")  # crashed it on every attach
    server = serve_in_process(data)
    client = connect(server.address)
    client.hello()
    welcome = client.wait_for(lambda m: m.type == "welcome", 120)
    assert len(welcome.get("jobs")) == 50 and all(len(job["name"]) <= 64 for job in welcome.get("jobs"))
    client.list_jobs()
    jobs = {job["job"]: job for job in client.wait_for(lambda m: m.type == "jobs", 30).get("jobs")}
    assert jobs["a" * 16]["status"] == "damaged" and "cannot be read" in jobs["a" * 16]["reason"]
    assert jobs["b" * 16]["status"] == "damaged" and "'step'" in jobs["b" * 16]["reason"]
    client.attach("c" * 16)
    error = client.wait_for(lambda m: m.type == "error", 30)
    assert error.get("code") == "damaged" and error.get("job") == "c" * 16
    client.attach("a" * 16)
    assert client.wait_for(lambda m: m.type == "error", 30).get("code") == "damaged"
    client.ping("alive")
    assert client.wait_for(lambda m: m.type == "pong", 30).get("token") == "alive"


@pytest.mark.integration  # an in-process server on a real socket
def test_names_are_sanitised_and_bounded_at_submit(serve_in_process, connect):
    server = serve_in_process()
    client = connect(server.address)
    client.submit("preview", EXAMPLE_PNG, {"steps": 1}, name="  Chair\x00\u202e\n" + "ü" * 300)
    job = client.wait_for(lambda m: m.type == "accepted", 120).get("job")
    record = json.loads((server.data / "jobs" / job / "job.json").read_text())
    assert record["name"] == "Chair" + "ü" * 59


@pytest.mark.integration  # an in-process server on a real socket
def test_a_second_server_on_the_folder_names_the_holder(serve_in_process, tiny_model, tmp_path):
    from backend.service.server import BackendServer

    serve_in_process(tmp_path / "data")
    with pytest.raises(UserError, match=r"in use by another iso3d serve \(pid \d+"):
        BackendServer(tiny_model, tmp_path / "data", "tcp://127.0.0.1:*")


@pytest.mark.integration  # an in-process server on a real socket
def test_another_model_does_not_resume_and_crashed_jobs_use_up_their_retries(serve_in_process, connect, tmp_path):
    data = tmp_path / "data"
    write_job(data, "d" * 16, status="queued", model="isotropic3d (pkunliu/Isotropic3D)", created=1.0)
    write_job(data, "e" * 16, status="running", runs=3, crashes=2, model="tiny (untrained)", created=2.0)
    server = serve_in_process(data, options=_options(max_crashes=3))
    client = connect(server.address)
    client.list_jobs()
    jobs = {job["job"]: job for job in client.wait_for(lambda m: m.type == "jobs", 60).get("jobs")}
    assert jobs["d" * 16]["status"] == "needs_model" and "isotropic3d" in jobs["d" * 16]["reason"]
    record = json.loads((data / "jobs" / ("e" * 16) / "job.json").read_text())
    assert record["status"] == "failed" and record["error_message"] == "failed: crashed 3 times"
    assert json.loads((data / "jobs" / ("d" * 16) / "job.json").read_text())["status"] == "queued"  # kept


def _options(**values):
    from backend.service.options import ServiceOptions

    return ServiceOptions(**values)


@pytest.mark.integration  # an in-process server on a real socket
def test_low_disk_refuses_new_jobs_and_leaves_nothing(serve_in_process, connect):
    server = serve_in_process(options=_options(min_free_gb=100_000.0))
    client = connect(server.address)
    client.submit("preview", EXAMPLE_PNG, {"steps": 1})
    error = client.wait_for(lambda m: m.type in ("error", "accepted"), 60)
    assert error.type == "error" and error.get("code") == "disk_full" and "prune" in error.get("message")
    assert not list((server.data / "jobs").iterdir())


@pytest.mark.integration  # an in-process server on a real socket
def test_a_full_queue_refuses_new_jobs_and_leaves_nothing(serve_in_process, connect):
    server = serve_in_process(options=_options(max_queued=1))
    client = connect(server.address)
    accepted = []
    for _ in range(3):  # one runs, one waits, the third finds the queue full
        client.submit("preview", EXAMPLE_PNG, {"steps": 999})
        reply = client.wait_for(lambda m: m.type == "accepted" or (m.type == "error" and m.get("job") is None), 120)
        accepted.append(reply)
        if len(accepted) == 1:  # the first is running, not waiting
            client.wait_for(lambda m: m.type == "progress" and m.get("job") == reply.get("job"), 120)
    assert [m.type for m in accepted] == ["accepted", "accepted", "error"]
    assert accepted[2].get("code") == "queue_full"
    assert sorted(p.name for p in (server.data / "jobs").iterdir()) == sorted(m.get("job") for m in accepted[:2])
    for message in accepted[:2]:
        client.cancel(message.get("job"))


def test_prune_deletes_old_finished_jobs_first_and_never_unfinished_ones(tmp_path):
    data = tmp_path / "data"
    now = time.time()
    for index, (status, age_days) in enumerate([("done", 30), ("failed", 20), ("queued", 40), ("done", 1),
                                                ("done", 0.5)]):
        folder = write_job(data, f"{index:016x}", status=status, created=now - age_days * 86400)
        (folder / "result.bin").write_bytes(b"\0" * 1_000_000)
    store = JobStore(data)
    assert prune(store, keep_days=10, max_data_gb=None, now=now) == [f"{0:016x}", f"{1:016x}"]
    # then by size: the oldest finished job goes until the jobs take at most 2.5 MB (each
    # holds 1 MB + its input image); the queued one stays
    assert prune(store, keep_days=None, max_data_gb=0.0025, now=now) == [f"{3:016x}"]
    assert sorted(p.name for p in (data / "jobs").iterdir()) == [f"{2:016x}", f"{4:016x}"]


def test_serve_prune_command(tmp_path, capsys):
    from backend.cli import main

    data = tmp_path / "data"
    write_job(data, "f" * 16, created=time.time() - 5 * 86400)
    write_job(data, "0" * 16, created=time.time())
    assert main(["serve", "--prune", "--keep-days", "2", "--data", str(data)]) == 0
    assert "pruned 1 finished jobs" in capsys.readouterr().out
    assert [p.name for p in (data / "jobs").iterdir()] == ["0" * 16]
    assert main(["serve", "--prune", "--data", str(data)]) == 2
    assert "--keep-days" in capsys.readouterr().err


@pytest.mark.integration  # an in-process server on a real socket
def test_prune_message_deletes_old_finished_jobs(serve_in_process, connect, tmp_path):
    from blender_addon.core import protocol

    data = tmp_path / "data"
    write_job(data, "1" * 16, created=time.time() - 9 * 86400)
    write_job(data, "2" * 16, created=time.time())
    server = serve_in_process(data)
    client = connect(server.address)
    client.send(protocol.encode("prune", keep_days=float("inf")))
    assert client.wait_for(lambda m: m.type == "error", 60).get("code") == "bad_settings"  # finite numbers only
    client.send(protocol.encode("prune", keep_days=2))
    remaining = client.wait_for(lambda m: m.type == "jobs", 60).get("jobs")
    assert [job["job"] for job in remaining] == ["2" * 16]
    assert sorted(p.name for p in (data / "jobs").iterdir()) == ["2" * 16]
