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
