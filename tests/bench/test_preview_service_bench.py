"""bench/preview_service.py runs on this machine with the tiny model (so it cannot rot) and bounds its waits."""

from __future__ import annotations

import pytest

from tests.helpers.bench_scripts import bench_script

pytestmark = pytest.mark.integration  # a real server on a loopback socket, in a thread


@pytest.fixture(scope="module")
def bench():
    with bench_script("preview_service") as module:
        yield module


# slow: a service with a warm-up and previews (~22 s); the default run's service_generate bench test runs the same
# service_latencies
@pytest.mark.slow
def test_preview_service_benchmark_tiny_cpu_reports_every_figure(bench, tmp_path):
    out = tmp_path / "preview_service.json"
    # deadlines for a tiny-model service on a loaded 2-core machine (as the service tests): five minutes a wait
    info = bench.main(["--tiny", "--device", "cpu", "--steps", "2", "--repeats", "1", "--answer-s", "300",
                       "--json", str(out)])
    assert out.is_file()
    assert info["warmup"] == "ready" and set(info["warmup_parts_s"]) == {"preview", "generate"}
    for key in ("submit_to_views_ms", "submit_to_done_ms", "bare_preview_ms"):
        assert info[key] > 0, key
    split = info["split_ms"]
    # one repeat: the two parts of each path add up to it (each split measured on the same clock)
    assert split["submit_to_first_step"] + split["first_step_to_views"] == pytest.approx(info["submit_to_views_ms"],
                                                                                         abs=0.02)
    # the bare total holds the two parts and the return from the call after the views (a function return; 50 ms
    # allow for a loaded machine's scheduling)
    left = info["bare_preview_ms"] - split["bare_to_first_step"] - split["bare_first_step_to_views"]
    assert -0.02 <= left < 50
    assert set(info["uncounted_first_ms"]) == {"submit_to_views", "bare"} and min(info["uncounted_first_ms"].values()) > 0
    assert set(info["stages_ms"]) >= {"input_worker_check_decode_and_model_input", "views_message_png_encoding",
                                    "collect_after_a_job (gc; before the next job)"}


def test_a_service_that_never_gets_ready_times_out_instead_of_hanging(bench):
    class NeverReady:
        endpoint = "tcp://127.0.0.1:9"  # nothing answers there

    with pytest.raises(TimeoutError):
        bench.service_latencies(NeverReady(), b"", {}, 1, lambda marks: None, answer_s=1.0)
