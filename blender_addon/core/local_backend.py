"""A backend process on this machine (`iso3d serve`) started and stopped by the add-on (no bpy). It stops with the
Blender that started it: by the Stop button, at a normal exit (atexit), and when Blender is killed or crashes
(``parent_watch``: SIGTERM, so the running job saves its state and resumes at the next start)."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .parent_watch import child_environment


class LocalBackendError(Exception):
    """The local backend cannot be started; the message says why in plain words."""


def serve_command(python: str, model: str, device: str, bind: str, data: str) -> list[str]:
    """The command line of `iso3d serve` for these preferences."""
    if python:
        if not os.path.isfile(python):
            raise LocalBackendError(f"The Python executable {python} does not exist")
        command = [python, "-m", "backend.cli", "serve"]
    else:
        iso3d = shutil.which("iso3d")
        if iso3d is None:
            raise LocalBackendError(
                "The `iso3d` command is not on PATH: install the backend (pip install isotropic3d[backend]) or set "
                "the Python executable in the add-on preferences"
            )
        command = [iso3d, "serve"]
    command += ["--bind", bind, "--data", data, "--device", device or "auto"]
    model = model.strip()
    if model in ("tiny", "random", "isotropic3d"):
        command += ["--model", model]
    elif model:
        if not os.path.isfile(model):
            raise LocalBackendError(f"The checkpoint {model} does not exist")
        command += ["--checkpoint", model]
    return command


class LocalBackend:
    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.started = 0.0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, command: list[str], data: str) -> None:
        if self.running:
            raise LocalBackendError("A local backend is already running; stop it first")
        Path(data).mkdir(parents=True, exist_ok=True)
        self.log_path = Path(data) / "serve.log"
        log = open(self.log_path, "w")
        environment = child_environment(dict(os.environ, PYTHONUNBUFFERED="1"))  # it stops when Blender dies
        try:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment,
                start_new_session=sys.platform != "win32",
            )
        except OSError as error:
            raise LocalBackendError(f"Could not start {command[0]}: {error.strerror or error}") from None
        finally:
            log.close()
        self.started = time.monotonic()
        atexit.register(self.stop)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self.process = None

    def _last_log_line(self) -> str:
        try:
            lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except (OSError, AttributeError):
            return ""
        return lines[-1][:160] if lines else ""

    def listening(self) -> bool:
        return self.running and "listening on" in (self.log_path.read_text(errors="replace") if self.log_path else "")

    def status_line(self) -> str:
        if self.process is None:
            return "Local backend: not started"
        code = self.process.poll()
        if code is not None:
            return f"Local backend exited (code {code}): {self._last_log_line() or 'no output'}"
        if self.listening():
            return "Local backend: running"
        return f"Local backend: starting ({time.monotonic() - self.started:.0f} s)"
