"""The add-on's child processes die with the Blender that started them, also when it is killed with SIGKILL (no
atexit, no unregister): the local backend (`iso3d serve`, stopped by SIGTERM so its running job saves its state)
and the image-downscale child. The "Blender" here is a plain Python parent running the add-on's own bpy-free start
code (blender_addon.core); the children are the real ones."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys

import pytest

from tests.helpers.backend import free_port
from tests.helpers.paths import REPO_ROOT
from tests.helpers.processes import alive, python, spawn
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.integration

# A tiny-model `iso3d serve` starts in seconds on a quiet machine (torch import, model build) and in minutes at a
# load average of 15; a Python start, tens of seconds there.
START_S = 600
DEADLINE_S = 120

BACKEND_PARENT = """
import sys, time
from blender_addon.core.local_backend import LocalBackend, serve_command
bind, data = sys.argv[1], sys.argv[2]
backend = LocalBackend()
backend.start(serve_command(sys.executable, "tiny", "cpu", bind, data), data)
print(backend.process.pid, flush=True)
time.sleep(600)
"""
DOWNSCALE_PARENT = """
import sys, time
from blender_addon.core.image_downscale import start_downscale
process = start_downscale(sys.argv[1], sys.argv[2], "")  # "": the bpy module's way (no Blender binary)
print(process.pid, flush=True)
time.sleep(600)
"""
# The macOS watch (a thread polling os.getppid()), run on Linux: the child says its pid once it watches.
POLLING_PARENT = """
import subprocess, sys
from blender_addon.core.parent_watch import child_environment
child = ("import os, time\\nfrom blender_addon.core.parent_watch import exit_with_parent\\n"
         "assert exit_with_parent(poll=True)\\nprint(os.getpid(), flush=True)\\ntime.sleep(600)")
sys.exit(subprocess.Popen([sys.executable, "-c", child], env=child_environment()).wait())  # its stdout closes
"""



def kill_parent_and_wait_for(parent: subprocess.Popen, child: int) -> None:
    os.kill(parent.pid, signal.SIGKILL)  # as a crash or the OOM killer would: no cleanup code runs in the parent
    assert parent.wait(DEADLINE_S) == -signal.SIGKILL
    wait_until(lambda: not alive(child), DEADLINE_S, f"the orphaned child {child} to end")


def leave_nothing_running(pid: int | None) -> None:
    """A failed test must not leave the child behind (it is in a session of its own, out of spawn's reach)."""
    if pid is not None and alive(pid):
        os.kill(pid, signal.SIGKILL)


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (the watch itself is "
                                "portable; see blender_addon/core/parent_watch.py)")


@linux_only
def test_the_local_backend_stops_when_blender_is_killed(tmp_path):
    data, child = tmp_path / "data", None
    log = data / "serve.log"
    with spawn(python("-c", BACKEND_PARENT, f"tcp://127.0.0.1:{free_port()}", data), cwd=REPO_ROOT,
               stdout=subprocess.PIPE, text=True) as parent:
        try:
            child = int(parent.stdout.readline())
            # listening: past the start of its main(), where it began to watch its parent
            wait_until(lambda: "listening on" in (log.read_text() if log.is_file() else "") or not alive(child),
                       START_S, lambda: f"the local backend to listen; its log: {log.read_text()[-500:]!r}")
            assert alive(child), log.read_text()[-2000:]
            kill_parent_and_wait_for(parent, child)
            assert "iso3d serve: stopped" in log.read_text()  # SIGTERM: a graceful stop (the job saves its state)
        finally:
            leave_nothing_running(child)


@linux_only
@pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="the downscale child needs the bpy module")
def test_the_image_downscale_child_ends_when_blender_is_killed(tmp_path):
    """The child reads a FIFO nobody writes to: it would wait for good (an unreadable network file, in real use)."""
    fifo, child = tmp_path / "photo.jpg", None
    os.mkfifo(fifo)

    def waits_on_the_fifo() -> bool:  # blocked in open(), waiting for a writer: past the start of its watch
        with open(f"/proc/{child}/wchan") as wchan:
            return wchan.read() == "wait_for_partner"

    with spawn(python("-c", DOWNSCALE_PARENT, fifo, tmp_path / "small.png"), cwd=REPO_ROOT,
               stdout=subprocess.PIPE, text=True) as parent:
        try:
            child = int(parent.stdout.readline())
            wait_until(waits_on_the_fifo, START_S, "the downscale child to open the image")
            kill_parent_and_wait_for(parent, child)
            assert not (tmp_path / "small.png").exists()
        finally:
            leave_nothing_running(child)


@linux_only
def test_the_polling_watch_of_macos_ends_the_child_too():
    child = None
    with spawn(python("-c", POLLING_PARENT), cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True) as parent:
        try:
            child = int(parent.stdout.readline())  # the child's line: it watches now
            kill_parent_and_wait_for(parent, child)
        finally:
            leave_nothing_running(child)
