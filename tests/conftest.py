"""Shared fixtures and the test lanes.

Lanes (scripts/test.sh runs each in its own pytest process, one after another):
- unit:        ``-m "not integration and not blender and not slow"``: in-process, no child processes, no sockets;
- integration: ``-m "integration and not blender and not slow"``: spawns processes (``iso3d serve``, CLIs, bpy
               scripts) or opens real sockets;
- blender:     ``-m "blender and not slow"``: imports bpy (Blender as a module) into the test process.
Blender as a module and heavy torch work must never share a process (they crashed and hung together), so ``blender``
is declared once per module, on one line: ``pytestmark = pytest.mark.blender`` (or a list holding it). A module
whose module-level marks cannot match the run's ``-m`` expression is not even imported (``pytest_ignore_collect``
below): the unit and integration lanes never import bpy, and the blender lane imports no torch-heavy test module.

What collection imported (torch, diffusers, open_clip, ...) is frozen out of the garbage collector once collected
(``pytest_collection_finish``): the full collections during the tests and the one at the interpreter's exit skip it.
"""

from __future__ import annotations

import gc
import itertools
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.helpers import golden
from tests.helpers.paths import GOLDEN_DIR

# One torch (OpenMP) thread in the tests and the processes they start, unless the caller chose otherwise: the
# tensors are tiny, so a second thread gains little on a quiet machine, while on a busy one OpenMP's spinning
# barriers made the same tests 10-20x slower (measured on a 2-core AMD EPYC at a load average of 12: the SDS resume
# test took 193 s with two threads, 16 s with one). Set before anything imports torch; children inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Triton's CPU interpreter for the fused hash-grid kernels' equality tests on a machine without an NVIDIA GPU (no
# driver device node): it must be chosen before anything imports triton, since triton.language's own @jit helpers
# (tl.zeros, ...) are made interpretable only at that import, and torch.compile imports triton during collection.
# Children inherit it; the sm_90 compile check (tests/nerf/test_hash_grid_kernels_compile.py) removes it.
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
# What the tests compile (in this process and the ones they start) is cached in a folder of the session's own, removed
# at its end, never in the user's ~/.cache/iso3d/compile (backend.compile_cache); a caller's choice is kept.
_SESSION_COMPILE_CACHE = None
if "ISO3D_COMPILE_CACHE" not in os.environ:
    _SESSION_COMPILE_CACHE = tempfile.mkdtemp(prefix="iso3d-test-compile-")
    os.environ["ISO3D_COMPILE_CACHE"] = _SESSION_COMPILE_CACHE

LANE_MARKERS = ("blender", "integration", "slow", "gpu")
_MODULE_MARKS = re.compile(r"^pytestmark\s*=(.*)$", re.MULTILINE)


def module_marks(path: Path) -> set[str]:
    """The marker names of a test module's one-line ``pytestmark = ...`` declaration (read, not imported)."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return set()
    declaration = _MODULE_MARKS.search(source)
    return set(re.findall(r"pytest\.mark\.(\w+)", declaration.group(1))) if declaration else set()


def _expression_can_match(markexpr: str, declared: set[str]) -> bool:
    """Whether ``-m markexpr`` can select any test of a module declaring ``declared``: its other lane markers may be
    added per test, except ``blender``, which is module-wide."""
    try:
        from _pytest.mark.expression import Expression
    except ImportError:  # pytest moved it: collect everything (slower, never wrong)
        return True
    expression = Expression.compile(markexpr)
    free = [name for name in LANE_MARKERS if name not in declared and name != "blender"]
    for values in itertools.product((False, True), repeat=len(free)):
        present = declared | {name for name, value in zip(free, values) if value}
        if expression.evaluate(lambda name, **kwargs: name in present):
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config):
    markexpr = config.getoption("markexpr", "")
    if not markexpr or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    if not _expression_can_match(markexpr, module_marks(collection_path)):
        return True
    return None


def pytest_collection_finish(session: pytest.Session) -> None:
    """The modules, functions and classes collection imported (most of the heap) live to the end of the process:
    frozen, the garbage collector's full collections do not traverse them again, and collections run less often
    (the youngest generation's threshold 10,000 allocations, not 700). Measured on the 2-core AMD EPYC VM: the unit
    lane's time in the collector 4.4 -> 2.5 CPU s, and the interpreter's exit after importing the tiny model's
    modules ~1.5 CPU s shorter (its last collection no longer walks them)."""
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """tests/golden: the reference oracles vendored in the repository."""
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def load_golden():
    """load_golden(name) -> (json metadata or None, tensors dict)."""
    return golden.load_golden


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuses a run that would import bpy next to the torch-heavy tests (the two crashed and hung together)."""
    blender = [item for item in items if item.get_closest_marker("blender")]
    if blender and len(blender) < len(items):
        other = next(item for item in items if not item.get_closest_marker("blender"))
        raise pytest.UsageError(
            f"{blender[0].nodeid} (bpy) and {other.nodeid} must not run in one process: run `bash scripts/test.sh "
            f"[ARGS]` (one pytest process per lane) or choose with -m blender / -m 'not blender'")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The untrained tiny model (seed 2) saved once per test process in the reference checkpoint layout."""
    from backend.models.multiview_model import build_tiny_model, save_checkpoint

    return save_checkpoint(build_tiny_model(seed=2), tmp_path_factory.mktemp("tiny_checkpoint") / "tiny.safetensors")


@pytest.fixture(scope="session")
def backend_processes(tmp_path_factory):
    """A factory of real backend processes for this test process: ``start(data=None, **options)`` returns a started
    ``tests.helpers.backend.BackendProcess`` (its data folder fresh unless given); every one still running is
    stopped at the end of the session, and all of them die with the test process in any case."""
    from tests.helpers.backend import BackendProcess

    started = []

    def start(data: Path | None = None, **options) -> BackendProcess:
        process = BackendProcess(data or tmp_path_factory.mktemp("backend") / "data", **options)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def tiny_model():
    """The untrained tiny model (seed 0), built once per test process; tests must not change its weights."""
    from backend.models.multiview_model import build_tiny_model

    return build_tiny_model(seed=0)


def pytest_sessionfinish(session, exitstatus):
    if _SESSION_COMPILE_CACHE is not None:
        shutil.rmtree(_SESSION_COMPILE_CACHE, ignore_errors=True)
