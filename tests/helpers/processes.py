"""Child processes that die with the test process.

``spawn(args, ...)`` is ``subprocess.Popen`` with two additions:
- the child leads a process group of its own, so that killing the group also reaches whatever it started;
- on Linux the child asks the kernel (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) to be killed when the test process dies,
  even by SIGKILL or a segfault, where no ``finally`` clause and no fixture teardown runs.

Use it as a context manager, ``with spawn(...) as child:``: on the way out the whole group is killed in every outcome
(return, failed assertion, exception, KeyboardInterrupt). ``run(args, timeout=...)`` is ``subprocess.run`` through
``spawn``: output captured as text, and on a timeout the group is killed before ``TimeoutExpired`` is raised.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Looked up in the parent: between fork and exec the child only calls the function pointer.
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform.startswith("linux") else None


def _die_with(parent_pid: int):
    def preexec() -> None:
        if _LIBC is not None:
            _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died between fork and prctl: nobody would kill us later
            os._exit(1)

    return preexec


class Child(subprocess.Popen):
    """A spawned child process; leaving its ``with`` block kills its process group."""

    def kill_group(self, timeout: float = 60.0) -> None:
        """SIGKILL to the child's whole process group, then reap the child (``timeout`` seconds at most)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # the group is empty already
            pass
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:  # unkillable (uninterruptible I/O): leave it to the kernel
            pass

    def __exit__(self, exc_type, exc, traceback):
        self.kill_group()
        super().__exit__(exc_type, exc, traceback)  # closes the pipes


def spawn(args, **kwargs) -> Child:
    """``subprocess.Popen(args, **kwargs)`` in a new process group, killed by the kernel if the test process dies."""
    if kwargs.get("preexec_fn") is not None or kwargs.get("start_new_session") is not None:
        raise ValueError("spawn sets preexec_fn and the process group itself")
    return Child([str(a) for a in args], start_new_session=True, preexec_fn=_die_with(os.getpid()), **kwargs)


def run(args, *, timeout: float, input: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(args, capture_output=True, text=True, timeout=timeout, ...)`` through ``spawn``."""
    kwargs.setdefault("text", True)
    with spawn(args, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL, stdout=subprocess.PIPE,
               stderr=subprocess.PIPE, **kwargs) as child:
        try:
            stdout, stderr = child.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill_group()
            stdout, stderr = child.communicate()
            raise subprocess.TimeoutExpired(child.args, timeout, stdout, stderr) from None
        return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


def python(*args) -> list[str]:
    """The command line of this interpreter running ``args`` (``-m module ...``, ``-c code``, a script)."""
    return [sys.executable, *map(str, args)]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie waiting for its reaper counts as dead; Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # gone (a process vanishing while its stat is read raises ESRCH, not ENOENT)
        return False
