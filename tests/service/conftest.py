"""Backends for the service tests (an in-process server on a real loopback socket; real `iso3d serve` processes come
from tests.helpers.backend) and clients for them."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from blender_addon.core.client import BackendClient


@pytest.fixture
def backend(serve_in_process):
    """The backend of the protocol tests: a server in a thread of the test process on a real loopback socket (real
    `iso3d serve` processes are started only where a kill, restart, lock or CURVE across processes is tested)."""
    return serve_in_process()


@pytest.fixture
def connect():
    clients = []

    def make(address: str, **kwargs) -> BackendClient:
        client = BackendClient(address, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


class InProcessBackend:
    """A BackendServer serving in a thread of the test process, on a real loopback ZeroMQ socket."""

    def __init__(self, model, data: Path, **kwargs):
        from backend.service.server import BackendServer

        self.data = data
        self.server = BackendServer(model, data, kwargs.pop("bind", "tcp://127.0.0.1:*"), **kwargs)
        self.address = self.server.endpoint.replace("0.0.0.0", "127.0.0.1")
        self.thread = threading.Thread(target=self.server.serve_forever, name="iso3d-test-server", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 120.0) -> None:
        self.server.stop_requested.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the in-process server did not stop"


@pytest.fixture
def serve_in_process(tiny_model, tmp_path):
    """``serve_in_process(data=None, **BackendServer options)`` -> a running InProcessBackend; all are stopped
    after the test."""
    servers = []

    def make(data: Path | None = None, **kwargs) -> InProcessBackend:
        server = InProcessBackend(tiny_model, data or tmp_path / "data", **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        if server.thread.is_alive():
            server.stop()
