"""On CUDA (marked ``gpu``): backend.profiling.HostSyncs counts the host's synchronisations by the line that made
them, and nothing for work that stays on the device."""

from __future__ import annotations

import pytest
import torch

from backend.profiling import HostSyncs

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_synchronisations_are_counted_by_call_site_over_the_steps():
    x = torch.rand(1000, device="cuda")
    syncs = HostSyncs()
    syncs.start()
    for _ in range(2):  # two "steps"
        y = (x * 2.0 + 1.0).cumsum(0)  # stays on the device: not counted
        value = y.sum().item()  # one synchronisation a step
        kept = (x > 0.5).nonzero()  # one more: the count of the result
    sites = syncs.stop(steps=2, top=10)
    assert value > 0 and kept.numel() > 0
    # this file's two lines, once a step each (torch's own code may add a site of its own, e.g. at the first CUDA
    # call of the process: not this test's concern)
    here = [site for site in sites if site["where"].startswith("tests/test_profiling_cuda.py:")]
    assert sorted(site["per_step"] for site in here) == [1.0, 1.0] and len(here) == 2
    assert torch.cuda.get_sync_debug_mode() == 0  # the debug mode is off again


def test_the_step_profile_finds_where_the_gpu_waited_for_the_host():
    """A synchronisation, then 3 ms of host work before the next launch: the GPU's idle time is put down to that
    launch (region 'backward', operator aten::mm), at least the 3 ms a step."""
    import time

    from backend.profiling import StepProfile, region

    x = torch.rand(512, 512, device="cuda")
    profile = StepProfile(torch.device("cuda"), steps=2)
    profile.start()
    for _ in range(2):
        with region("render.sampling"):
            total = (x @ x).sum().item()  # the host waits for the device here
        end = time.perf_counter() + 0.003
        while time.perf_counter() < end:  # host work while the device has nothing queued
            pass
        with region("backward"):
            x @ x
    summary = profile.stop()
    assert total > 0
    assert summary["gpu_idle_ms_per_step"] >= 3.0
    worst = summary["idle_top"][0]
    assert (worst["region"], worst["operator"]) == ("backward", "aten::mm") and worst["ms_per_step"] >= 3.0
    # the matrix products' kernels, put down to the region that launched each: one a step in each region
    by_region = summary["kernels_by_region"]
    for name in ("render.sampling", "backward"):
        assert by_region[name]["gpu_ms_per_step"] > 0, by_region
        assert any(kernel["calls_per_step"] >= 1.0 for kernel in by_region[name]["top"]), by_region
    # and to the host operator that launched it: the matrix product's kernel, from aten::mm (under aten::matmul)
    sites = [site["operators"] for kernel in by_region["backward"]["top"] for site in kernel["launched_from"]]
    assert any(site.endswith("aten::mm") for site in sites), by_region["backward"]
