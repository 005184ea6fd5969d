"""A real backend process (``iso3d serve --model tiny`` on CPU) on a free loopback port, for the tests that need a
real process: kill/restart, CURVE, the add-on end to end. It is a ``tests.helpers.processes`` child: it dies with the
test process, and ``stop`` / ``kill`` end its whole process group."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from tests.helpers.paths import EXAMPLE_IMAGE, REPO_ROOT
from tests.helpers.processes import python, spawn
from tests.helpers.waiting import wait_until

EXAMPLE_PNG = EXAMPLE_IMAGE.read_bytes()
# Loading the tiny model and binding takes ~5 s on a quiet 2-core machine, over a minute at a load average of 15.
START_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class BackendProcess:
    """``iso3d serve`` on ``bind`` (a fresh loopback port unless given), its jobs in ``data``, its log beside it."""

    def __init__(self, data: Path, bind: str | None = None, extra: list[str] = (), port: int | None = None):
        self.port = port or free_port()
        self.bind = bind or f"tcp://127.0.0.1:{self.port}"
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.data = Path(data)
        self.extra = list(extra)
        self.process = None
        self.log_path = None

    def restarted(self) -> "BackendProcess":
        """A new (not started) process with the same address, bind, data folder and options."""
        return BackendProcess(self.data, self.bind, self.extra, port=self.port)

    def start(self, wait: bool = True) -> "BackendProcess":
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self.data.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data.parent / f"serve-{self.port}-{time.monotonic_ns()}.log"
        with open(self.log_path, "w") as log:  # the child holds its own descriptor
            self.process = spawn(
                python("-m", "backend.cli", "serve", "--model", "tiny", "--device", "cpu", "--bind", self.bind,
                       "--data", self.data, *self.extra),
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env,
            )
        if wait:
            self.wait_listening()
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path else ""

    def wait_listening(self, timeout: float = START_TIMEOUT_S) -> None:
        def listening() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"the backend exited with {self.process.returncode}: {self.log()}")
            return "listening on" in self.log()

        wait_until(listening, timeout, lambda: f"the backend to listen; its log: {self.log()}", poll=0.1)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.process.kill_group()

    def stop(self) -> int | None:
        """SIGTERM (the service finishes cleanly), SIGKILL to the group if it does not within a minute."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                pass
        self.process.kill_group()  # anything it left behind, and the reaping
        return self.process.returncode

    def __enter__(self) -> "BackendProcess":
        return self if self.process is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
