"""The fused hash-grid kernels compile for a CUDA GPU (sm_90) here, without one: Triton's interpreter, which the
equality tests use on a CPU machine, runs Python that the GPU compiler may refuse (it accepted a constexpr
reassigned in a static loop, which the compiler does not), and the compiled code must round positions as torch
does (no fused multiply-add). Runs ``bench/hash_grid.py --compile-check`` in a child process: the kernels must be
imported without ``TRITON_INTERPRET``."""

from __future__ import annotations

import os

import pytest

from backend.nerf.hash_grid_triton import TRITON_INSTALLED
from tests.helpers.paths import REPO_ROOT
from tests.helpers.processes import python, run

pytestmark = pytest.mark.integration


@pytest.mark.skipif(not TRITON_INSTALLED, reason="triton is not installed (the dev extra brings it)")
def test_kernels_compile_for_cuda_without_fused_multiply_add():
    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = run(python(REPO_ROOT / "bench" / "hash_grid.py", "--compile-check"), timeout=300, env=environment)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if "PTX characters" in line]
    assert len(lines) == 10 and all(line.endswith(", 0 fma") for line in lines), result.stdout
