"""backend.compile_cache: what torch.compile produces lands in the iso3d folder, and a second process loads it.

Real processes, each importing what ``iso3d generate`` imports first (diffusers and ``torch._dynamo`` among it,
which write torch's own /tmp default into ``TORCHINDUCTOR_CACHE_DIR``), then compiling the field as a run does
(``RadianceField.use_compiled``, Inductor on the CPU: a C++ build, a few seconds cold)."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest

from tests.helpers.paths import REPO_ROOT
from tests.helpers.processes import python, run

# slow: two processes with Inductor's CPU build (~45 s on the 2-core CI machine); .ci/run runs them with the slow tests
pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHILD = textwrap.dedent("""
    import json, os
    import backend.commands.generate  # noqa: F401 - what a real process imports before it compiles
    import torch
    from torch._dynamo.utils import counters
    from backend.nerf.field import RadianceField
    from backend.nerf.presets import FieldConfig

    torch.manual_seed(0)
    field = RadianceField(FieldConfig(levels=2, log2_hashmap_size=8, base_resolution=4, per_level_scale=1.5))
    field.use_compiled()
    with torch.no_grad():
        density = field.density(torch.rand(64, 3) - 0.5)
    print(json.dumps({"density": density.tolist(),
                      "inductor_folder": os.environ["TORCHINDUCTOR_CACHE_DIR"],
                      "fxgraph": dict(counters["inductor"])}))
""")


def _compile_in_a_process(cache) -> dict:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    environment.update(ISO3D_COMPILE_CACHE=str(cache), PYTHONPATH=str(REPO_ROOT))
    # 600 s: a cold Inductor build of the field on a loaded 2-core machine (~25 s quiet)
    result = run(python("-c", CHILD), timeout=600, env=environment, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Inductor's CPU build needs the Linux toolchain")
def test_a_second_process_loads_the_compiled_field_from_the_iso3d_folder(tmp_path):
    cache = tmp_path / "compile"
    first = _compile_in_a_process(cache)
    assert first["inductor_folder"] == str(cache / "inductor")  # not torch's /tmp default
    assert (cache / "inductor" / "fxgraph").is_dir() and first["fxgraph"].get("fxgraph_cache_miss") == 1
    second = _compile_in_a_process(cache)
    assert second["fxgraph"].get("fxgraph_cache_hit") == 1 and "fxgraph_cache_miss" not in second["fxgraph"]
    assert second["density"] == first["density"]

