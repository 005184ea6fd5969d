"""backend.profiling: regions are timed only while a recorder is active, only the outermost of nested regions
counts, and the window's time is split into the regions and 'other'."""

from __future__ import annotations

import time

import pytest
import torch

from backend.profiling import (REGIONS, HostClock, RegionRecorder, StepProfile, compiled_cache_entries, cpu_self_times,
                               graphs_compiled, host_wait, region)


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_nothing_is_recorded_without_a_recorder_and_the_outermost_region_counts():
    with region("render.field"):  # no recorder: a no-op
        pass
    recorder = RegionRecorder(torch.device("cpu"))
    recorder.start()
    with region("mesh"):
        with region("render.field"):  # inside 'mesh': part of it, not counted on its own
            busy(0.01)
    with region("backward"):
        busy(0.005)
    busy(0.002)
    totals = recorder.stop()
    assert set(totals) == {"mesh", "backward"}
    assert totals["mesh"] >= 10 and totals["backward"] >= 5  # host clock, ms: at least the busy time
    assert recorder.window_ms >= totals["mesh"] + totals["backward"] + 2
    with region("optimizer"):  # stopped: nothing more recorded
        pass
    assert set(recorder.totals_ms) == {"mesh", "backward"}


def test_one_recorder_at_a_time():
    first = RegionRecorder(torch.device("cpu"))
    first.start()
    try:
        with pytest.raises(RuntimeError, match="already active"):
            RegionRecorder(torch.device("cpu")).start()
    finally:
        first.stop()


def test_the_host_clock_sums_waits_and_top_level_regions_only_while_running_one_at_a_time():
    with host_wait(), region("render.field"):  # nothing running: no-ops
        busy(0.002)
    clock = HostClock()
    with region("render.sampling"):  # entered before the clock started: its exit is not counted
        clock.start()
    try:
        with pytest.raises(RuntimeError, match="already"):
            HostClock().start()
        with region("render.sampling"):
            busy(0.004)
            with host_wait():
                busy(0.01)
        busy(0.03)  # outside a wait and a region: the host's own work in the step's ``other``
        with host_wait():
            busy(0.005)
        with region("backward"):
            busy(0.006)
            with region("render.field"):  # inside another region: that region's time
                busy(0.003)
    finally:
        clock.stop()
    with host_wait(), region("backward"):  # stopped: nothing more summed
        busy(0.03)
    # each is at least the busy time inside it; the upper bounds leave room for a loaded machine's preemptions and
    # stay below what the 30 ms spent outside, had it been counted, would add
    assert 0.015 <= clock.wait_seconds < 0.045
    assert set(clock.region_seconds) == {"render.sampling", "backward"}  # the nested region is backward's
    assert 0.014 <= clock.region_seconds["render.sampling"] < 0.044  # its own busy time and the wait inside it
    assert 0.009 <= clock.region_seconds["backward"] < 0.039


def test_step_profile_splits_the_window_and_lists_the_top_operators():
    profile = StepProfile(torch.device("cpu"), steps=2)
    profile.start()
    for _ in range(2):
        with region("render.field"):
            torch.randn(64, 64) @ torch.randn(64, 64)
        with region("optimizer"):
            busy(0.002)
    summary = profile.stop()
    regions = summary["regions_ms_per_step"]
    assert list(regions) == ["render.field", "optimizer", "other"]  # REGIONS' order, then 'other'
    assert regions["optimizer"] >= 2
    assert abs(sum(regions.values()) - summary["step_ms"]) < 0.01
    assert any(row["name"] == "aten::mm" and row["calls"] == 2 for row in summary["top"])
    assert all(not row["name"].startswith("iso3d:") for row in summary["top"])
    assert "other" not in REGIONS


def test_self_times_from_the_raw_events_are_the_profilers_own():
    """cpu_self_times (what the step profile's CPU table uses: the raw events, without the profiler's slow event
    tree) gives key_averages' self CPU time and call count of every operator, nested and re-dispatched ones
    (aten::sum in aten::sum) and the backward's included."""
    from torch.profiler import ProfilerActivity, profile

    weights = torch.randn(64, 64, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(5):
            (weights @ weights).relu().sum().backward()
    ours = cpu_self_times(profiler.profiler.kineto_results.events())
    theirs = {average.key: (average.self_cpu_time_total / 1e3, average.count) for average in profiler.key_averages()}
    assert set(ours) == set(theirs) and "aten::mm" in ours
    for name, (milliseconds, calls) in theirs.items():
        assert ours[name][1] == calls, name
        assert ours[name][0] == pytest.approx(milliseconds, abs=1e-9), name  # the same sums of whole nanoseconds


def _scaled(values: torch.Tensor) -> torch.Tensor:  # a function of its own: its code holds its compiled entries
    return values * 2.0


def test_compiled_cache_entries_count_what_torch_compile_holds_for_a_function():
    (before,) = compiled_cache_entries({"scaled": _scaled}).values()  # (none, unless this ran before in the process)
    compiled = torch.compile(_scaled, backend="eager", dynamic=False)
    compiled(torch.ones(3))
    compiled(torch.ones(3))  # the same guards hold: no new entry
    assert compiled_cache_entries({"scaled": _scaled}) == {"scaled": before + 1}
    traced = graphs_compiled()
    compiled(torch.ones(3, dtype=torch.float64))  # another dtype: a second entry, checked on every later call
    assert compiled_cache_entries({"scaled": _scaled}) == {"scaled": before + 2}
    assert graphs_compiled() == traced + 1  # the step that met the new dtype traced a graph
    compiled(torch.ones(3, dtype=torch.float64))
    assert graphs_compiled() == traced + 1  # and the next did not


def _cubed_plus_one(x):
    return x * x * x + 1


def test_compile_statistics_say_what_torch_compile_did_between_two_snapshots():
    from backend.profiling import compile_statistics, compile_statistics_since

    before = compile_statistics()
    compiled = torch.compile(_cubed_plus_one, backend="aot_eager", dynamic=False)
    compiled(torch.ones(4))
    middle = compile_statistics()
    traced = compile_statistics_since(before, middle)
    # one graph traced: Dynamo's own phase timed once, AOTAutograd counted it
    assert traced["counters"]["stats"]["unique_graphs"] == 1
    assert traced["counters"]["aot_autograd"]["total"] == 1
    total_s, calls = traced["seconds"]["_compile.compile_inner"]
    assert calls == 1 and total_s > 0
    assert list(traced["seconds"].values()) == sorted(traced["seconds"].values(), key=lambda v: -v[0])
    compiled(torch.ones(4))  # the same guards hold: nothing traced, nothing counted
    assert compile_statistics_since(middle) == {"seconds": {}, "counters": {}}
