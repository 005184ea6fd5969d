"""bench/unet_guards.py runs on the CPU (so it cannot rot): both variants of the tiny UNet's guards, and what the
module's guards left out take off each call's guard checks."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers.bench_scripts import bench_script


@pytest.mark.slow  # two Dynamo traces of the tiny UNet and its calls: ~13 s on the 2-core CI machine
def test_the_cpu_smoke_run_counts_and_times_the_guards_of_both_variants(tmp_path, capsys):
    out = tmp_path / "unet_guards.json"
    with bench_script("unet_guards") as bench:
        assert bench.main(["--tiny", "--device", "cpu", "--calls", "3", "--profiled", "2", "--out", str(out)]) == 0
        summary = json.loads(out.read_text())
        every, filtered = summary["variants"]["all_guards"], summary["variants"]["module_guards_left_out"]
        # the same compiled code: the same guards built, most of them on the module (left out by the filter)
        assert every["guards_built"] == every["guards_kept"] == filtered["guards_built"]
        assert filtered["guards_kept"] < 0.2 * every["guards_kept"]
        for variant in (every, filtered):
            assert variant["lookups_profiled"] == 2 and variant["host_ms_per_call_p50"] > 0
        # a twentieth of the guards: the check costs less, measured in this one run (CPU profiler overhead
        # included in both)
        assert filtered["cache_lookup_ms_per_call"] < every["cache_lookup_ms_per_call"]
        assert summary["unet"] == "tiny" and summary["parameters"] > 100
    if not torch.cuda.is_available():
        with bench_script("unet_guards") as bench:
            assert bench.main(["--device", "cuda"]) == 2
        assert "no CUDA device here" in capsys.readouterr().err
