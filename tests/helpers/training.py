"""Helpers of the fine-tuning tests: iso3d-train arguments for short CPU runs, one-thread arithmetic."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tests.helpers.paths import REPO_ROOT


def tiny_args(stage: str, data: Path, init: Path | None, out: Path, *extra: str) -> list[str]:
    """iso3d-train arguments for a short CPU run of the tiny model."""
    args = [stage, "--data", str(data), "--out", str(out), "--model", "tiny", "--precision", "fp32",
            "--num-workers", "0", "--no-progress", "--warmup-steps", "0", "--lr", "1e-3"]
    if init is not None:
        args += ["--init", str(init)]
    return args + list(extra)


def subprocess_env(threads: int | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


@contextlib.contextmanager
def single_thread():
    """CPU kernels are bit-reproducible only with one thread (parallel reductions differ from run to run)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
