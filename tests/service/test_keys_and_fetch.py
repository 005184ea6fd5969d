"""Keys, ownership and results by name (issue 14, item 8): secret keys 0600, exactly the allowed keys named, jobs
owned by the submitting CURVE key, no server paths in messages, and a job's file fetched in chunks."""

from __future__ import annotations

import shutil

import pytest

from backend.errors import UserError
from backend.service.auth import CurveKeys, generate_keys, public_key
from blender_addon.core import protocol
from blender_addon.core.client import BackendClient
from tests.helpers.backend import EXAMPLE_PNG

pytestmark = pytest.mark.integration


def test_secret_keys_are_private_and_a_readable_one_is_refused(tmp_path, tiny_model):
    from backend.service.server import BackendServer

    keys = generate_keys(tmp_path / "keys")
    assert keys["server_secret"].stat().st_mode & 0o777 == 0o600
    assert keys["client_secret"].stat().st_mode & 0o777 == 0o600
    keys["server_secret"].chmod(0o644)
    with pytest.raises(UserError, match="readable by group or others.*chmod 600"):
        BackendServer(tiny_model, tmp_path / "data", "tcp://127.0.0.1:*",
                      CurveKeys(keys["server_secret"], keys["client_public"]))


def curve_client(connect, server, keys, secret) -> BackendClient:
    return connect(server.address, curve=BackendClient.load_curve_keys(keys["server_public"], secret))


def test_curve_jobs_belong_to_their_key_and_only_named_keys_connect(serve_in_process, connect, tmp_path):
    keys = generate_keys(tmp_path / "keys")
    other = generate_keys(tmp_path / "other")
    admin = generate_keys(tmp_path / "admin")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    for source in (keys, other, admin):
        shutil.copy(source["client_public"], allowed / f"{source['client_public'].parent.parent.name}.key")
    # naming one key file admits that key only, not its folder
    only_first = serve_in_process(tmp_path / "single", bind="tcp://0.0.0.0:*", admin_key=None,
                                  keys=CurveKeys(keys["server_secret"], allowed / "keys.key"))
    stranger = curve_client(connect, only_first, keys, other["client_secret"])
    stranger.hello()
    with pytest.raises(TimeoutError):
        stranger.wait_for(lambda m: True, 3)
    only_first.stop()

    server = serve_in_process(bind="tcp://0.0.0.0:*", keys=CurveKeys(keys["server_secret"], allowed),
                              admin_key=public_key(admin["client_public"]))
    owner = curve_client(connect, server, keys, keys["client_secret"])
    intruder = curve_client(connect, server, keys, other["client_secret"])
    administrator = curve_client(connect, server, keys, admin["client_secret"])
    owner.submit("preview", EXAMPLE_PNG, {"steps": 1})
    job = owner.wait_for(lambda m: m.type == "accepted", 120).get("job")
    done = owner.wait_for(lambda m: m.type in ("done", "error") and m.get("job") == job, 120)
    assert done.type == "done", done.fields
    # remote clients get artifacts by name and size, never a server path
    assert done.get("artifacts") == [{"name": "views.png", "size": done.get("artifacts")[0]["size"]}]
    for request in (lambda c: c.attach(job), lambda c: c.cancel(job), lambda c: c.resume(job)):
        request(intruder)
        assert intruder.wait_for(lambda m: m.type == "error", 30).get("code") == "unknown_job"
    intruder.list_jobs()
    assert intruder.wait_for(lambda m: m.type == "jobs", 30).get("jobs") == []
    administrator.list_jobs()
    assert [j["job"] for j in administrator.wait_for(lambda m: m.type == "jobs", 30).get("jobs")] == [job]
    # a key removed from the folder is refused from the next connection on, without a restart
    (allowed / "other.key").unlink()
    late = curve_client(connect, server, keys, other["client_secret"])
    late.hello()
    with pytest.raises(TimeoutError):
        late.wait_for(lambda m: True, 3)


def fetch_all(client, job: str, name: str) -> bytes:
    data, offset = b"", 0
    while True:
        client.send(protocol.encode("fetch", job=job, name=name, offset=offset))
        chunk = client.wait_for(lambda m: m.type in ("chunk", "error"), 30)
        assert chunk.type == "chunk", chunk.fields
        assert chunk.get("offset") == offset and len(chunk.payloads[0]) <= protocol.FETCH_CHUNK_BYTES
        data += chunk.payloads[0]
        offset += len(chunk.payloads[0])
        if chunk.get("final"):
            assert offset == chunk.get("size")
            return data


def test_fetch_returns_a_result_file_by_name_and_nothing_else(serve_in_process, connect):
    server = serve_in_process()
    client = connect(server.address)
    client.submit("preview", EXAMPLE_PNG, {"steps": 1})
    job = client.wait_for(lambda m: m.type == "accepted", 120).get("job")
    done = client.wait_for(lambda m: m.type in ("done", "error") and m.get("job") == job, 120)
    (artifact,) = done.get("artifacts")
    assert artifact["name"] == "views.png"
    assert fetch_all(client, job, "views.png") == (server.data / "jobs" / job / "views.png").read_bytes()
    for name in ("job.json", "../../server.lock", "/etc/passwd", "input.png"):
        client.send(protocol.encode("fetch", job=job, name=name))
        assert client.wait_for(lambda m: m.type == "error", 30).get("code") == "unknown_file"
    client.send(protocol.encode("fetch", job=job, name="views.png", offset=10**9))
    assert client.wait_for(lambda m: m.type == "error", 30).get("code") == "bad_offset"
