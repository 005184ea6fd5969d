"""A real backend process (`iso3d serve --model tiny`) on a free loopback port, and clients for it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from blender_addon.client import BackendClient
from tests.conftest import REPO_ROOT

EXAMPLE_PNG = (REPO_ROOT / "examples" / "example.png").read_bytes()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class BackendProcess:
    def __init__(self, data: Path, bind: str | None = None, extra: list[str] = ()):
        self.port = free_port()
        self.bind = bind or f"tcp://127.0.0.1:{self.port}"
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.data = data
        self.extra = list(extra)
        self.process = None

    def start(self, wait: bool = True) -> "BackendProcess":
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        self.log = open(self.data.parent / f"serve-{self.port}-{time.monotonic_ns()}.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "serve", "--model", "tiny", "--device", "cpu",
             "--bind", self.bind, "--data", str(self.data), *self.extra],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env,
        )
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        log = Path(self.log.name)
        while time.monotonic() < deadline:
            if "listening on" in log.read_text():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"the backend exited: {log.read_text()}")
            time.sleep(0.1)
        raise TimeoutError(log.read_text())

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        return self.process.returncode


@pytest.fixture
def backend(tmp_path):
    process = BackendProcess(tmp_path / "data").start()
    yield process
    process.stop()


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


@pytest.fixture(scope="session")
def tiny_model():
    """The untrained test-size model on the CPU, built once for every in-process server of the session."""
    from backend.models.multiview_model import build_tiny_model

    return build_tiny_model().eval()


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
