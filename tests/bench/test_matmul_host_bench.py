"""bench/matmul_host.py runs on the CPU (so it cannot rot): every product of the field's MLPs in every row mode, and
its row counts are what each mode says."""

from __future__ import annotations

import json

from tests.helpers.bench_scripts import bench_script


def test_row_modes_give_new_repeated_and_bucketed_counts():
    with bench_script("matmul_host") as bench:
        new = bench.row_counts("new", 1000, 5, 64)
        assert len(set(new)) == 5 and all(count % 2 == 1 for count in new)
        assert bench.row_counts("same", 1000, 5, 64) == [1000] * 5
        bucketed = bench.row_counts("bucketed", 1000, 5, 64)
        assert all(count % 64 == 0 and count >= raw for count, raw in zip(bucketed, new))
        assert len(set(bucketed)) < len(set(new))


def test_the_cpu_smoke_run_writes_every_product_and_mode(tmp_path, capsys):
    out = tmp_path / "matmul_host.json"
    with bench_script("matmul_host") as bench:
        assert bench.main(["--device", "cpu", "--rows", "2000", "--calls", "3", "--json", str(out)]) == 0
        results = json.loads(out.read_text())["results"]
        products = {name for name, _, _ in bench.PRODUCTS}
        expected = {(p + suffix, mode) for p in products for suffix in ("", "_weight_gradient")
                    for mode in bench.ROW_MODES}
        assert {(row["product"], row["rows"]) for row in results} == expected
        assert all(row["host_us_p50"] > 0 and row["gpu_us_p50"] is None for row in results)
        assert bench.main(["--device", "cpu", "--blas", "cublas"]) == 2
        assert "needs a CUDA device" in capsys.readouterr().err
        assert bench.main(["--device", "cpu", "--calls", "1"]) == 2
