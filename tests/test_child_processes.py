"""Child processes of the tests die with the test process (tests.helpers.processes): when it is killed with SIGKILL
(no fixture teardown runs) and when a test leaves its ``with spawn(...)`` block by an exception."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.helpers.paths import REPO_ROOT
from tests.helpers.processes import alive, python, run, spawn
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.integration

SLEEPER = python("-c", "import time; time.sleep(600)")
# A stand-in for a pytest process: starts a child through spawn (as the fixtures do), says its pid, then waits.
PARENT = f"""
import subprocess, sys, time
from tests.helpers.processes import spawn
child = spawn({SLEEPER!r}, stdout=subprocess.DEVNULL)
print(child.pid, flush=True)
time.sleep(600)
"""
# Starting a Python interpreter takes well under a second on a quiet machine, seconds under heavy load.
DEADLINE_S = 120



def test_a_child_dies_when_its_test_process_is_killed():
    with spawn(python("-c", PARENT), cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True) as parent:
        child = int(parent.stdout.readline())
        assert alive(child)
        os.kill(parent.pid, signal.SIGKILL)  # as a crash or an out-of-memory kill would: no cleanup code runs
        assert parent.wait(DEADLINE_S) == -signal.SIGKILL
        wait_until(lambda: not alive(child), DEADLINE_S, f"the orphaned child {child} to die")


def test_leaving_the_with_block_by_an_exception_kills_the_whole_group():
    grandchild_code = f"import subprocess; p = subprocess.Popen({SLEEPER!r}); print(p.pid, flush=True); p.wait()"
    with pytest.raises(RuntimeError, match="a failing test"):
        with spawn(python("-c", grandchild_code), stdout=subprocess.PIPE, text=True) as child:
            grandchild = int(child.stdout.readline())
            raise RuntimeError("a failing test")
    assert child.returncode == -signal.SIGKILL
    wait_until(lambda: not alive(grandchild), DEADLINE_S, f"the grandchild {grandchild} to die")


def test_run_kills_the_group_on_a_timeout():
    with pytest.raises(subprocess.TimeoutExpired):
        run(SLEEPER, timeout=1)
