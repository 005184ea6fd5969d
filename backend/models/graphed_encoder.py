"""The SDS path's VAE encoder replayed from CUDA graphs, forward and backward.

Every SDS step runs the compiled VAE encoder (backend.models.acceleration.compile_vae_encoder) forward and backward
on the step's renders. Compiled without CUDA graphs, each call costs the host ~2.7 ms of kernel launches and guard
checks, forward and backward alike, while a ``fast`` step is bound by its host (bench/generate.py's profile,
2026-12-03: the GPU busy ~26 of ~39 ms). ``torch.cuda.make_graphed_callables`` records the compiled encoder's
forward and its backward as two CUDA graphs at the first call with a new batch shape; later calls replay them: the
same kernels on the same values (the graph holds the compiled code's kernels), one launch each.

- Only calls that build a graph for the backward replay it (grad mode on, the images require grad, CUDA); any other
  call runs the compiled encoder itself.
- One shape at a time: a new shape (the next phase's batch) releases the graph of the last one. The graphs' memory
  pool stays reserved while they live (the memory plan counts it beside the field's own peak,
  backend.nerf.memory), so the trainer releases them when its run ends.
- A capture must have the GPU to itself: ``before_capture`` (the trainer's: join the background mesh, whose colours
  run on the GPU) is called first.
- The graphs are taken under the caller's autocast state (with autocast's cast cache off, which capture needs), and
  a call under another state runs the compiled encoder.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

Moments = Callable[[torch.Tensor], torch.Tensor]  # images [N, 3, H, W] in [-1, 1] -> posterior moments


class GraphedEncoder:
    """``moments`` (images -> posterior moments; the compiled encoder) replayed from CUDA graphs where it can be."""

    def __init__(self, moments: Moments):
        self.moments = moments
        self.before_capture: Callable[[], None] | None = None
        self._graphed: Moments | None = None
        self._key: tuple | None = None
        self._failed: set[tuple] = set()  # shapes whose capture failed: they run the compiled encoder

    @staticmethod
    def _key_of(images: torch.Tensor) -> tuple | None:
        if not (torch.is_grad_enabled() and images.requires_grad and images.is_cuda):
            return None
        autocast = torch.is_autocast_enabled("cuda")
        return (tuple(images.shape), images.dtype, images.device, autocast,
                torch.get_autocast_dtype("cuda") if autocast else None)

    def would_capture(self, images: torch.Tensor) -> bool:
        key = self._key_of(images)
        return key is not None and key != self._key and key not in self._failed

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        key = self._key_of(images)
        if key is None or key in self._failed:
            return self.moments(images)
        if key != self._key:
            self.release()
            self._capture(images, key)
            if self._graphed is None:
                return self.moments(images)
        return self._graphed(images)

    def _capture(self, images: torch.Tensor, key: tuple) -> None:
        if self.before_capture is not None:
            self.before_capture()
        sample = torch.empty_like(images).copy_(images.detach()).requires_grad_(True)
        autocast, dtype = key[3], key[4]
        try:
            with torch.autocast("cuda", dtype=dtype or torch.float16, enabled=autocast, cache_enabled=False):
                self._graphed = torch.cuda.make_graphed_callables(self.moments, (sample,))
            self._key = key
        except Exception as error:  # noqa: BLE001 - any capture failure leaves the compiled encoder, said once
            self._failed.add(key)
            self._graphed, self._key = None, None
            log.warning("the VAE encoder runs without CUDA graphs for %s images: capturing them failed (%s)",
                        list(images.shape), error)

    def release(self) -> None:
        """Drop the graphs and give their memory pool back to the device.

        The graphs, their static tensors and so their pool are held by the autograd Function class
        ``make_graphed_callables`` builds, and a class is in reference cycles of its own: dropping the last reference
        leaves them to the cyclic garbage collector, whose next full pass may be far off (tests/models/
        test_graphed_encoder_cuda.py saw the pool still reserved). One collection here frees them, so that the
        pool is back before the next phase records its own graphs."""
        if self._graphed is None:
            return
        self._graphed, self._key = None, None
        gc.collect()
        torch.cuda.empty_cache()


def ungraphed(moments: Moments | None) -> Moments | None:
    """The compiled encoder under ``moments`` (itself when it is not graphed): what the memory plan measures."""
    return moments.moments if isinstance(moments, GraphedEncoder) else moments
