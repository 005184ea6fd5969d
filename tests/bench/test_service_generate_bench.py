"""bench/service_generate.py runs on this machine with the tiny model (so it cannot rot), reports every figure in
order, and bounds its waits."""

from __future__ import annotations

import json

import pytest

from blender_addon.core.client import BackendClient
from tests.helpers.bench_scripts import bench_script

pytestmark = pytest.mark.integration  # a real server on a loopback socket, in a thread

TOP = {"date", "commit", "machine", "device", "torch", "model", "compile", "settings", "mesh_every", "until",
       "model_setup_s", "warmup", "warmup_s", "warmup_parts_s", "ready_after_start_s", "generate", "mesh_stages_ms",
       "preview", "wall_s", "setup_ms", "setup_outside_job_ms"}
# the generate job's set-up parts before its first step, in the order they run (backend.service.job_kinds)
SETUP_PARTS = ["decode", "config", "condition", "field", "memory_plan", "guidance_and_optimizer", "first_step"]
GENERATE = {"job", "accepted_s", "first_progress_s", "first_progress_step", "meshes", "mesh_points", "views",
            "cancel_sent_s", "end", "end_s", "last_step", "first_mesh_s", "first_mesh_step", "first_mesh_faces",
            "first_mesh_point_s"}
PREVIEW = {"steps", "repeats", "submit_to_views_ms", "submit_to_done_ms", "bare_preview_ms", "split_ms",
           "service_overhead_ms"}


@pytest.fixture(scope="module")
def bench():
    with bench_script("service_generate") as module:
        yield module


def test_service_generate_benchmark_tiny_cpu_reports_the_first_mesh_and_the_preview(bench, tmp_path):
    out = tmp_path / "service_generate.json"
    # deadlines for a tiny-model service on a loaded 2-core machine (as the service tests): five minutes a wait;
    # one 1-step preview (the preview figures are bench/preview_service.py's, tested there)
    info = bench.main(["--tiny", "--device", "cpu", "--preview-steps", "1", "--preview-repeats", "1",
                       "--answer-s", "300", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(info))
    assert set(info) >= TOP and info["warmup"] == "off"  # compile off on the CPU: no warm-up, as `iso3d serve`
    timeline = info["generate"]
    assert set(timeline) >= GENERATE
    # the tiny settings mesh every 2 steps; the untrained field holds density 2 by then (a mesh, not an empty point)
    assert info["mesh_every"] == 2
    assert timeline["first_mesh_step"] == info["mesh_every"] and timeline["first_mesh_faces"] > 0
    assert timeline["meshes"][0]["step"] == 2 and timeline["meshes"][0]["vertices"] > 0
    assert 0 < timeline["accepted_s"] <= timeline["first_progress_s"] <= timeline["first_mesh_s"]
    assert timeline["first_progress_step"] == 1
    # --until first-mesh: cancelled right after it
    assert timeline["end"] == "cancelled" and timeline["first_mesh_s"] <= timeline["cancel_sent_s"] <= timeline["end_s"]
    # the job's set-up, from the service's own log line: every part, none negative, and together no longer than
    # submit -> the first progress (which also holds the queue and the socket), each on the same host clock
    setup = info["setup_ms"]
    assert list(setup) == SETUP_PARTS and all(ms >= 0 for ms in setup.values())
    assert setup["first_step"] > 0 and sum(setup.values()) <= timeline["first_progress_s"] * 1000
    assert info["setup_outside_job_ms"] == pytest.approx(timeline["first_progress_s"] * 1000 - sum(setup.values()),
                                                         abs=0.01)  # rounding of the stored figures
    assert set(info["mesh_stages_ms"]) == {"store_mesh_npz_and_record (after sending)", "mesh_message_encoding"}
    assert set(info["preview"]) >= PREVIEW and info["preview"]["submit_to_views_ms"] > 0


def test_a_generate_job_without_a_service_times_out_instead_of_hanging(bench):
    client = BackendClient("tcp://127.0.0.1:9")  # nothing answers there
    try:
        with pytest.raises(TimeoutError):
            bench.generate_timeline(client, bench.synthetic_input_png(16), {}, 2, "first-mesh", 2, answer_s=1.0)
    finally:
        client.close()
