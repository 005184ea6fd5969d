"""Where the tests find the repository's files. Nothing here points outside the repository."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
GOLDEN_DIR = REPO_ROOT / "tests" / "golden"  # the reference oracles; tests/golden/README.md says how they were made
EXAMPLE_IMAGE = REPO_ROOT / "examples" / "example.png"
