"""A real backend process (`iso3d serve --model tiny`) on a free loopback port, and clients for it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
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
