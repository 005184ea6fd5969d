"""bench/field_step.py runs on the CPU (so it cannot rot): each precision beside variants of the code, each row
compared with the first."""

from __future__ import annotations

import json

import pytest

from tests.helpers.bench_scripts import bench_script


# slow: three published-size fields on the CPU (~7 s); .ci/run runs it with the slow tests
@pytest.mark.slow
def test_precisions_beside_code_variants_each_compared_with_the_first(tmp_path, capsys):
    out = tmp_path / "field_step.json"
    with bench_script("field_step") as bench:
        assert bench.main(["--device", "cpu", "--samples", "3000", "--query-samples", "4000", "--repeats", "1",
                           "--warmup", "0", "--no-compile", "--precisions", "float32",
                           "--code-variants", "none,padded_output_layers,merged_mlps,none",
                           "--json", str(out)]) == 0
        rows = json.loads(out.read_text())["variants"]
        assert list(rows) == ["float32", "float32@padded_output_layers", "float32@merged_mlps", "float32 (2)"]
        assert all(row["train_fwd_bwd_ms"] > 0 and row["density_query_ms"] > 0 for row in rows.values())
        for label in ("float32@padded_output_layers", "float32@merged_mlps"):
            # the same field computed another way, in float32: its normals turn by float32 rounding alone, which
            # the direction of a near-zero gradient magnifies in a few points
            assert rows[label]["normal_angle_deg_p50"] < 1e-3 and rows[label]["normal_angle_deg_p99"] < 0.1, rows
            assert rows[label]["density_max_rel_error"] < 1e-5, rows
            assert rows[label]["query_density_max_rel_error"] < 1e-5 and rows[label]["filter_decisions_changed"] == 0
        assert bench.main(["--device", "cpu", "--code-variants", "none,nope"]) == 2
        assert "unknown nope" in capsys.readouterr().err
