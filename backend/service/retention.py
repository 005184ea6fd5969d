"""Disk under control: the data folder's size, and pruning finished jobs (oldest first) by age and by a size cap.
Running and unfinished jobs are never deleted."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger("iso3d.server")
GB = 1e9
PRUNABLE = ("done", "failed", "cancelled", "damaged")


def folder_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links are not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def prune(store, keep_days: float | None, max_data_gb: float | None, now: float | None = None) -> list[str]:
    """Delete finished (and damaged) jobs: those older than ``keep_days``, then the oldest until the jobs take at
    most ``max_data_gb``. The ids deleted."""
    now = time.time() if now is None else now
    candidates = sorted(store.prunable(), key=lambda item: item[1])  # (job id, created)
    deleted = []
    if keep_days is not None:
        for job_id, created in candidates:
            if now - created > keep_days * 86400:
                store.delete(job_id)
                deleted.append(job_id)
    if max_data_gb is not None:
        sizes = {job_id: folder_bytes(store.root / job_id) for job_id, _ in candidates if job_id not in deleted}
        used = folder_bytes(store.root)
        for job_id, _ in candidates:
            if used <= max_data_gb * GB:
                break
            if job_id in sizes:
                store.delete(job_id)
                deleted.append(job_id)
                used -= sizes[job_id]
    if deleted:
        log.info("pruned %d finished jobs", len(deleted))
    return deleted
