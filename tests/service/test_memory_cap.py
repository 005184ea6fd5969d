"""`iso3d serve --max-gpu-memory`: the service's cap bounds every generate job; a job that cannot fit fails at its
start with an error naming the cap, and the service goes on (a real in-process server, real sockets)."""

from __future__ import annotations

import pytest

from backend.service.options import ServiceOptions
from tests.helpers.backend import EXAMPLE_PNG

pytestmark = pytest.mark.integration

ANSWER_S = 60  # an immediate answer of a tiny-model backend on a loaded 2-core machine (see test_server.py)
JOB_S = 300  # a short job there


def test_a_job_over_the_service_cap_fails_at_its_start_and_the_service_goes_on(serve_in_process, connect):
    server = serve_in_process(options=ServiceOptions(max_gpu_memory=0.0001))
    client = connect(server.address)
    client.submit("generate", EXAMPLE_PNG, {"preset": "tiny", "steps": 2})
    messages = []
    accepted = client.wait_for(lambda m: m.type in ("accepted", "error"), ANSWER_S, messages)
    assert accepted.type == "accepted", accepted.fields
    job = accepted.get("job")
    final = client.wait_for(lambda m: m.type in ("done", "error") and m.get("job") == job, JOB_S, messages)
    assert final.type == "error" and final.get("code") == "not_enough_memory", final.fields
    assert "0.0 GiB allowed" in final.get("message") and "no preset fits" in final.get("message")
    assert not any(m.type == "progress" and m.get("step") for m in messages)  # refused before any step
    client.ping("still-there")
    assert client.wait_for(lambda m: m.type == "pong", ANSWER_S).get("token") == "still-there"
