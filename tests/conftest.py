"""Shared test fixtures: the golden oracles in ../shared/golden beside the checkout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = REPO_ROOT.parent / "shared" / "golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN_DIR.is_dir():
        raise FileNotFoundError(f"the golden oracles are missing: expected {GOLDEN_DIR} (shared/ beside the checkout)")
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def load_golden(golden_dir):
    """load_golden(name) -> (json metadata or None, tensors dict)."""
    from safetensors.torch import load_file

    def load(name: str):
        meta_path = golden_dir / f"{name}.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
        tensors_path = golden_dir / f"{name}.safetensors"
        return meta, (load_file(str(tensors_path)) if tensors_path.exists() else {})

    return load


def relative_error(out, ref) -> float:
    return ((out.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
