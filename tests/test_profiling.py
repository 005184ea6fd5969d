"""backend.profiling: regions are timed only while a recorder is active, only the outermost of nested regions
counts, and the window's time is split into the regions and 'other'."""

from __future__ import annotations

import time

import pytest
import torch

from backend.profiling import REGIONS, HostWaits, RegionRecorder, StepProfile, cpu_self_times, host_wait, region


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


def test_host_waits_sum_only_while_active_one_at_a_time():
    with host_wait():  # nothing active: a no-op
        busy(0.002)
    waits = HostWaits()
    waits.start()
    try:
        with pytest.raises(RuntimeError, match="already"):
            HostWaits().start()
        with host_wait():
            busy(0.01)
        busy(0.01)  # outside a wait: the host's own work, not summed
        with host_wait():
            busy(0.005)
    finally:
        waits.stop()
    with host_wait():  # stopped: nothing more summed
        busy(0.01)
    assert 0.015 <= waits.seconds < 0.025  # the two waits' busy time; the slack is the host clock's reads


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
