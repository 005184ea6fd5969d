"""Which code a benchmark measured, for its results file."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def source_commit(root: Path = REPO_ROOT) -> str | None:
    """The checked-out commit's short hash, with ``-dirty`` where tracked files differ from it (a run of uncommitted
    code, or of a copy of the tree whose git metadata is older than its files, as the device machine's can be);
    None outside a git checkout."""
    try:
        result = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7", "--exclude=*"],
                                capture_output=True, text=True, timeout=10, cwd=root)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None
