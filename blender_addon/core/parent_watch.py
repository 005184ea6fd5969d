"""Child processes of the add-on die with the Blender that started them, also when Blender is killed (SIGKILL, a
crash, the OOM killer), where no atexit or unregister code runs. Standard library only: a child Blender loads this
file by its path (``PATH`` below).

The parent starts the child with ``child_environment()`` (its own pid in ``ISO3D_PARENT_PID``); the child calls
``exit_with_parent()`` first thing. What each platform gets:

- Linux: ``prctl(PR_SET_PDEATHSIG)``: the kernel signals the child the moment its parent dies (the parent *thread*
  that started it, in fact: the add-on starts children from Blender's main thread, which lives as long as Blender).
- macOS and other POSIX systems: a daemon thread checks every ``POLL_SECONDS`` whether the child was re-parented
  (``os.getppid()`` changes when the parent dies), then signals the child itself.
- Windows: a daemon thread waits on a handle of the parent process (signalled when it ends), then signals the child.

Either way the child also checks at once that the parent is still there (it may have died before the watch began).
The signal is SIGTERM by default (``iso3d serve`` stops gracefully on it: the running job saves its state), or
SIGKILL with ``graceful=False`` (nothing to save: the image downscale). A child Python interpreter without a
handler for SIGTERM simply ends.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

PARENT_VARIABLE = "ISO3D_PARENT_PID"
PATH = os.path.abspath(__file__)
POLL_SECONDS = 1.0  # macOS/BSD: how long a child may outlive its parent
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def child_environment(environment: dict | None = None) -> dict:
    """``environment`` (default: this process's) plus this process's pid, for a child that calls
    ``exit_with_parent``."""
    return dict(os.environ if environment is None else environment, **{PARENT_VARIABLE: str(os.getpid())})


def exit_with_parent(graceful: bool = True, poll: bool = False) -> bool:
    """In a child started with ``child_environment``: end this process when its parent dies (see the module
    docstring). False (and nothing done) when no parent asked for it. The variable is removed, so that this
    process's own children do not watch the wrong parent. ``poll``: the macOS way (a thread watching
    ``os.getppid()``) on any POSIX system, so that it is tested on Linux too."""
    value = os.environ.pop(PARENT_VARIABLE, "")
    if not value.isdigit():
        return False
    parent = int(value)
    stop = signal.SIGTERM if graceful or sys.platform == "win32" else signal.SIGKILL
    if poll and sys.platform != "win32":
        _watch_in_thread(_wait_for_reparenting, parent, stop)
    elif sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(stop), 0, 0, 0) != 0:
            _watch_in_thread(_wait_for_reparenting, parent, stop)  # a kernel that refuses: poll instead
    elif sys.platform == "win32":
        _watch_in_thread(_wait_for_windows_process, parent, stop)
    else:
        _watch_in_thread(_wait_for_reparenting, parent, stop)
    if sys.platform != "win32" and os.getppid() != parent:  # the parent died before the watch began
        signal.raise_signal(stop)
    return True


def _watch_in_thread(wait, parent: int, stop: int) -> None:
    def watch() -> None:
        wait(parent)
        signal.raise_signal(stop)  # the process's own handler runs (in the main thread), else the default: end

    threading.Thread(target=watch, name="iso3d-parent-watch", daemon=True).start()


def _wait_for_reparenting(parent: int) -> None:
    import time

    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)


def _wait_for_windows_process(parent: int) -> None:
    import ctypes

    synchronize, infinite = 0x00100000, 0xFFFFFFFF
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = kernel32.OpenProcess(synchronize, False, parent)
    if handle:  # else the parent is gone already
        kernel32.WaitForSingleObject(handle, infinite)
        kernel32.CloseHandle(handle)
