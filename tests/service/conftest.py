"""A real backend process (`iso3d serve --model tiny`) on a free loopback port, and clients for it."""

from __future__ import annotations

import pytest

from blender_addon.client import BackendClient
from tests.helpers.backend import BackendProcess


@pytest.fixture
def backend(tmp_path):
    with BackendProcess(tmp_path / "data").start() as process:
        yield process


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
