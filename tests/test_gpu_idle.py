"""backend.gpu_idle: the GPU's idle gaps in a trace, each put down to the launch that ended it (the region open at
that launch and the innermost host operator on the launching thread). The records are written here as a CUDA trace
lays them out (a CUDA profile cannot run on the CPU); tests/test_profiling_cuda.py runs it on a real trace."""

from __future__ import annotations

import torch

from backend.gpu_idle import TraceRecord, idle_gaps, kernels_by_region, launches_by_region, records_from_profiler

US = 1_000  # ns


def host(name, start_us, end_us, thread=1, correlation=0):
    return TraceRecord(name, start_us * US, end_us * US, on_device=False, thread=thread, correlation=correlation)


def kernel(name, start_us, end_us, correlation):
    return TraceRecord(name, start_us * US, end_us * US, on_device=True, correlation=correlation)


def test_gaps_are_put_down_to_the_launch_after_them():
    records = [
        host("iso3d:render.sampling", 0, 100),
        host("aten::nonzero", 10, 60),
        host("cudaLaunchKernel", 12, 14, correlation=1),
        host("cudaStreamSynchronize", 20, 55),
        host("aten::index", 70, 90),
        host("iso3d::hash_grid_features", 75, 85),  # a custom op of ours: an operator, not a region
        host("cudaLaunchKernel", 80, 82, correlation=2),  # 45 us after the device ran dry at 35
        host("iso3d:backward", 100, 200),
        host("aten::mm", 150, 160, thread=2),  # the autograd engine's thread
        host("cudaLaunchKernel", 152, 154, thread=2, correlation=3),
        host("cudaLaunchKernel", 156, 158, thread=2, correlation=4),
        kernel("nonzero_kernel", 15, 35, correlation=1),
        kernel("index_kernel", 80, 140, correlation=2),
        kernel("gemm_a", 155, 160, correlation=3),  # 15 us after index_kernel
        kernel("gemm_b", 160, 170, correlation=4),  # back to back: no gap
        kernel("iso3d:backward", 100, 200, correlation=0),  # a region's device-side span: not work
    ]
    summary = idle_gaps(records, steps=1)
    assert summary["gpu_idle_ms_per_step"] == round((45 + 15) / 1e3, 3)
    assert summary["idle_by_region"] == {"render.sampling": 0.045, "backward": 0.015}
    assert summary["idle_top"] == [
        {"region": "render.sampling", "operator": "iso3d::hash_grid_features", "ms_per_step": 0.045,
         "gaps_per_step": 1.0},
        {"region": "backward", "operator": "aten::mm", "ms_per_step": 0.015, "gaps_per_step": 1.0},
    ]


def test_runtime_calls_are_counted_by_the_region_open_at_each_on_any_thread():
    records = [
        host("iso3d:render.sampling", 0, 100),
        host("cudaLaunchKernel", 12, 14, correlation=1),
        host("cudaStreamSynchronize", 20, 55),  # a synchronisation is a runtime call too: its wait is host time
        host("iso3d::hash_grid_features", 75, 85),  # a custom op, not a region: its launch is sampling's
        host("cuLaunchKernel", 80, 82, correlation=2),
        host("iso3d:backward", 100, 200),
        host("cudaLaunchKernel", 152, 154, thread=2, correlation=3),  # the autograd engine's thread, inside backward
        host("cudnnConvolutionForward", 160, 170),  # a cuDNN call: not a runtime call
        host("cudaMemcpyAsync", 210, 216, correlation=4),  # outside every region
        kernel("nonzero_kernel", 15, 35, correlation=1),
    ]
    assert launches_by_region(records, steps=2) == {
        "render.sampling": {"calls_per_step": 1.5, "host_ms_per_step": round((2 + 35 + 2) / 1e3 / 2, 3)},
        "backward": {"calls_per_step": 0.5, "host_ms_per_step": 0.001},
        "(none)": {"calls_per_step": 0.5, "host_ms_per_step": 0.003},
    }


def test_device_work_is_put_down_to_the_region_that_launched_it():
    records = [
        host("iso3d:render.sampling", 0, 100),
        host("cudaLaunchKernel", 10, 12, correlation=1),
        host("cudaLaunchKernel", 20, 22, correlation=2),
        host("cudaLaunchKernel", 30, 32, correlation=3),
        host("iso3d:backward", 100, 200),
        host("cudaLaunchKernel", 150, 152, thread=2, correlation=4),  # the autograd engine's thread
        host("cudaGraphLaunch", 160, 165, correlation=5),  # a CUDA graph: its kernels share the launch's id
        host("cudaMemcpyAsync", 250, 252, correlation=6),  # outside every region
        kernel("density", 15, 45, correlation=1),
        kernel("density", 50, 70, correlation=2),
        kernel("nonzero", 70, 75, correlation=3),
        kernel("table_gradient", 155, 255, correlation=4),  # runs past its region's end: still backward's
        kernel("graph_conv", 255, 265, correlation=5),
        kernel("graph_conv", 265, 275, correlation=5),
        kernel("Memcpy DtoH", 275, 279, correlation=6),
        kernel("iso3d:backward", 100, 200, correlation=0),  # a region's device-side span: not work
    ]
    table = kernels_by_region(records, steps=2, top=1)
    assert list(table) == ["backward", "render.sampling", "(none)"]  # by GPU time
    assert table["backward"] == {"gpu_ms_per_step": 0.06, "top": [
        {"name": "table_gradient", "ms_per_step": 0.05, "calls_per_step": 0.5,
         "launched_from": [{"operators": "(no operator)", "ms_per_step": 0.05, "calls_per_step": 0.5}]}]}
    assert table["render.sampling"]["gpu_ms_per_step"] == 0.028
    assert table["render.sampling"]["top"][0]["name"] == "density"
    assert (table["render.sampling"]["top"][0]["ms_per_step"], table["render.sampling"]["top"][0]["calls_per_step"]) \
        == (0.025, 1.0)
    assert table["(none)"]["gpu_ms_per_step"] == 0.002 and table["(none)"]["top"][0]["name"] == "Memcpy DtoH"
    second = kernels_by_region(records, steps=2)["backward"]["top"][1]
    assert (second["name"], second["ms_per_step"], second["calls_per_step"]) == ("graph_conv", 0.01, 1.0)


def test_each_kernels_cost_is_put_down_to_the_operators_that_launched_it():
    """One kernel name (a copy) launched from two call sites, each with its own chain of host operators on its
    thread: the sites ranked by GPU time, the chain outermost first and cut to the innermost ``depth``."""
    records = [
        host("iso3d:backward", 0, 1000),
        host("autograd::engine::evaluate_function: HashGridBackward", 10, 100, thread=2),
        host("aten::contiguous", 20, 50, thread=2),
        host("aten::copy_", 25, 45, thread=2),
        host("cudaLaunchKernel", 30, 32, thread=2, correlation=1),
        host("autograd::engine::evaluate_function: AccumulateGrad", 200, 300, thread=2),
        host("aten::copy_", 210, 230, thread=2),
        host("cudaLaunchKernel", 215, 217, thread=2, correlation=2),
        host("aten::copy_", 400, 420, thread=1),  # another thread's operator open at the same time as launch 3
        host("autograd::engine::evaluate_function: HashGridBackward", 400, 500, thread=2),
        host("aten::contiguous", 410, 450, thread=2),
        host("aten::copy_", 412, 440, thread=2),
        host("cudaLaunchKernel", 415, 417, thread=2, correlation=3),
        kernel("direct_copy", 40, 100, correlation=1),
        kernel("direct_copy", 220, 240, correlation=2),
        kernel("direct_copy", 420, 480, correlation=3),
    ]
    entry = kernels_by_region(records, steps=2, depth=2)["backward"]["top"][0]
    assert (entry["name"], entry["ms_per_step"], entry["calls_per_step"]) == ("direct_copy", 0.07, 1.5)
    assert entry["launched_from"] == [
        {"operators": "aten::contiguous > aten::copy_", "ms_per_step": 0.06, "calls_per_step": 1.0},
        {"operators": "autograd::engine::evaluate_function: AccumulateGrad > aten::copy_", "ms_per_step": 0.01,
         "calls_per_step": 0.5},
    ]
    deeper = kernels_by_region(records, steps=2, depth=3)["backward"]["top"][0]["launched_from"][0]["operators"]
    assert deeper == "autograd::engine::evaluate_function: HashGridBackward > aten::contiguous > aten::copy_"


def test_gaps_are_averaged_over_steps_and_small_ones_only_counted():
    records = [host("aten::add", 0, 400)]
    for step in range(2):
        base = step * 200
        records += [host("cudaLaunchKernel", base + 1, base + 2, correlation=10 * step + 1),
                    host("cudaLaunchKernel", base + 100, base + 101, correlation=10 * step + 2),
                    kernel("a", base + 5, base + 10, correlation=10 * step + 1),
                    kernel("b", base + 10.5, base + 20, correlation=10 * step + 2)]  # 0.5 us: below min_gap_us
    summary = idle_gaps(records, steps=2, min_gap_us=1.0)
    # gaps: 0.5 us (step 0), 185 us (b of step 0 -> a of step 1), 0.5 us (step 1)
    assert summary["gpu_idle_ms_per_step"] == round(186 / 1e3 / 2, 3)
    assert summary["idle_top"] == [{"region": "(none)", "operator": "aten::add", "ms_per_step": 0.092,
                                    "gaps_per_step": 0.5}]


def test_no_device_work_no_gaps_and_real_cpu_events_convert():
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        torch.randn(8, 8).sum()
    records = records_from_profiler(profiler.profiler.kineto_results.events())
    assert any(r.name == "aten::sum" and not r.on_device and r.end_ns >= r.start_ns for r in records)
    assert idle_gaps(records, steps=1) == {"gpu_idle_ms_per_step": 0.0, "idle_by_region": {}, "idle_top": []}
