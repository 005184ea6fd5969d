"""Host-to-device copies that do not make the host wait.

A copy from pageable host memory to a GPU synchronises the host with the device (torch copies it, then waits for
the stream: ``torch.cuda.set_sync_debug_mode`` reports it). A step that sends its cameras, lights and codes that
way waits for the previous step's work several times before queueing its own, and the GPU idles while the host
catches up. Through pinned memory the copy is queued like a kernel; torch's pinned-memory cache keeps the block
until the copy has landed.
"""

from __future__ import annotations

import torch


def to_device(host: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``host`` on ``device``: a CPU tensor goes to a GPU through pinned memory without waiting; anything else as
    ``host.to(device)``."""
    device = torch.device(device)
    if device.type != "cuda" or host.device.type != "cpu":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)
