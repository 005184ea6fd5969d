"""Staging folders of the training-data renderer: one live owner each, checked before publishing (no bpy).

An object renders into ``<staging root>/<object id>.<pid>.<random>/``; beside it ``<same name>.lock`` holds the
owning process's pid and host and, where the OS and file system allow it, an exclusive ``flock`` for as long as
the owner lives (the kernel drops it when the process dies, whatever kills it). A run starting over removes only
staging folders whose owner is gone (``remove_abandoned``), never one a live process still writes. Publishing
checks the whole folder (``render_plan.verify_object_folder``: every image complete, ``cameras.json`` listing
them) and then moves it to its final name with one rename, so an object folder outside the staging root is always
whole.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid

try:
    import fcntl
except ImportError:  # Windows (the add-on inside Blender): the pid alone marks the owner
    fcntl = None

LOCK_SUFFIX = ".lock"
PENDING_SUFFIX = ".new"  # a lock being made (``<folder>.lock.new``), renamed to ``<folder>.lock`` once held
PENDING_MAX_AGE_S = 300.0  # a pending lock older than this belongs to a process killed while making it


class PublishError(Exception):
    """A staged object cannot be published; the message is the reason."""


class StagingFolder:
    """A fresh staging folder for one object, owned (locked) by this process until ``close()``."""

    def __init__(self, staging_root: str, object_id: str):
        os.makedirs(staging_root, exist_ok=True)
        self.path = os.path.join(staging_root, f"{object_id}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        self.lock_path = self.path + LOCK_SUFFIX
        # The lock exists (and is held) before the folder does: a folder without a live lock is abandoned. It is
        # made under a temporary name, locked and filled, then renamed into place, so another process's
        # remove_abandoned never sees a lock file that exists but is not yet held (and would delete it).
        pending = self.lock_path + PENDING_SUFFIX
        self._lock_fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise
            except OSError:  # a file system without locks: the pid and host below still name the owner
                pass
        os.write(self._lock_fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        os.replace(pending, self.lock_path)  # the open descriptor (and its flock) moves with the name
        os.makedirs(self.path)

    def publish(self, final: str, check, overwrite: bool = False):
        """Checks the staged folder with ``check(path) -> reason | None`` and renames it to ``final``.

        Raises PublishError when the check fails, when this process no longer owns the folder (someone removed
        it) or when ``final`` exists and not ``overwrite``; then nothing is published."""
        if not os.path.isdir(self.path):
            raise PublishError(f"the staging folder {self.path} was removed while rendering")
        reason = check(self.path)
        if reason is not None:
            raise PublishError(f"incomplete render, not published: {reason}")
        if os.path.exists(final):
            if not overwrite:
                raise PublishError(f"output folder already exists: {final}")
            retired = f"{self.path}.old"
            os.replace(final, retired)
            os.replace(self.path, final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(self.path, final)

    def close(self):
        """Removes what is left of the staging folder and releases the lock."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock_fd is not None:
            try:
                os.unlink(self.lock_path)
            except FileNotFoundError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def owner_alive(lock_path: str) -> bool:
    """Whether the process that created ``lock_path`` still holds it. Without working locks (no ``fcntl``, or a
    file system that refuses them) the pid is checked on the owner's own host; an owner on another host then
    counts as alive (its folder is kept: never remove what may still be written)."""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            except OSError:
                pass  # no locks here: fall back to the pid below
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                return False
        fields = os.read(fd, 300).decode(errors="replace").split()
        try:
            pid = int(fields[0]) if fields else 0
        except ValueError:
            return False
        if len(fields) > 1 and fields[1] != socket.gethostname():
            return True
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    finally:
        os.close(fd)


def live_staging_folders(staging_root: str) -> list[str]:
    """Names of the staging folders under ``staging_root`` whose owner is alive (objects being rendered now)."""
    if not os.path.isdir(staging_root):
        return []
    return sorted(name[: -len(LOCK_SUFFIX)] for name in os.listdir(staging_root)
                  if name.endswith(LOCK_SUFFIX) and owner_alive(os.path.join(staging_root, name)))


def remove_abandoned(staging_root: str) -> tuple[int, int]:
    """Removes staging folders (and locks) whose owner is gone; returns (removed, still owned by a live process)."""
    if not os.path.isdir(staging_root):
        return 0, 0
    removed = live = 0
    names = set(os.listdir(staging_root))
    for name in sorted(names):
        path = os.path.join(staging_root, name)
        if name.endswith(LOCK_SUFFIX + PENDING_SUFFIX):
            _remove_stale_pending_lock(path)
            continue
        if name.endswith(LOCK_SUFFIX):
            continue
        if owner_alive(path + LOCK_SUFFIX):
            live += 1
            continue
        # Other workers publish (rename away) and clean up their folders while this runs: a name listed above
        # may be gone by now, which is not an error.
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
        removed += 1
    for name in sorted(names):  # locks whose folder is gone (removed above, or never made)
        lock = os.path.join(staging_root, name)
        if name.endswith(LOCK_SUFFIX) and not os.path.exists(lock[: -len(LOCK_SUFFIX)]) and not owner_alive(lock):
            try:
                os.unlink(lock)
            except FileNotFoundError:
                pass
    return removed, live


def _remove_stale_pending_lock(path: str) -> None:
    """Deletes a ``.lock.new`` left by a process killed while making its lock (old, and not held)."""
    try:
        if time.time() - os.stat(path).st_mtime < PENDING_MAX_AGE_S:
            return
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # held by a live process (or no locks here: keep it, it is tiny)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    finally:
        os.close(fd)
