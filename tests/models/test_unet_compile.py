"""backend.models.acceleration.compile_unet: the UNet compiled for fixed shapes with Dynamo's guards on the module
left out (unet_guard_filter): the same outputs, a new shape or dtype compiled anew, another UNet instance run on
its own weights. Dynamo on the CPU ("eager" backend: the graph Dynamo captures, run by torch ops; the guards are
Dynamo's whatever the backend)."""

from __future__ import annotations

import pytest
import torch

from backend.models.acceleration import compile_unet, unet_guard_filter
from backend.models.multiview_model import build_tiny_model
from backend.profiling import graphs_compiled


def _inputs(batch: int, dtype=torch.float32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, 8, 8, generator=generator, dtype=dtype), torch.full((batch,), 500),
            torch.randn(batch, 1, 64, generator=generator, dtype=dtype),
            torch.randn(batch, 16, generator=generator, dtype=dtype))


def _call(unet, inputs):
    x, t, context, camera = inputs
    with torch.no_grad():
        return unet(x, t, context=context, camera=camera, num_frames=4)


@pytest.mark.slow  # four Dynamo traces of the tiny UNet: ~12 s on the 2-core CI machine
def test_the_compiled_unet_keeps_its_input_guards_and_runs_any_instance_on_its_own_weights():
    torch._dynamo.reset()  # this test counts the graphs it compiles
    first = build_tiny_model(seed=0).unet.eval()
    second = build_tiny_model(seed=1).unet.eval()  # same shapes, other weights
    compiled_first = compile_unet(first, backend="eager")
    traced = graphs_compiled()
    eight = _inputs(8)
    torch.testing.assert_close(_call(compiled_first, eight), _call(first, eight), rtol=1e-5, atol=1e-5)
    assert graphs_compiled() == traced + 1
    # another batch: the inputs' guards hold the shapes, so it compiles anew (as the phases' batches do)
    sixteen = _inputs(16, seed=1)
    torch.testing.assert_close(_call(compiled_first, sixteen), _call(first, sixteen), rtol=1e-5, atol=1e-5)
    assert graphs_compiled() == traced + 2
    # another instance of the same shapes through the same code: no module guard tells them apart, and it runs
    # the graph on its own weights (the parameters are the graph's inputs)
    compiled_second = compile_unet(second, backend="eager")
    got = _call(compiled_second, eight)
    torch.testing.assert_close(got, _call(second, eight), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, _call(first, eight), rtol=1e-3, atol=1e-3)
    # another dtype of weights: the kept tensor guards on conv_in / conv_out compile it anew
    wider = build_tiny_model(seed=2).unet.eval().double()
    before = graphs_compiled()
    inputs64 = _inputs(8, dtype=torch.float64)
    torch.testing.assert_close(_call(compile_unet(wider, backend="eager"), inputs64), _call(wider, inputs64))
    assert graphs_compiled() == before + 1


class _UNetShaped(torch.nn.Module):
    """The UNet's outer layers by their names (conv_in, a block, conv_out): Dynamo's guards on such a module
    without the tiny UNet's seconds of tracing."""

    def __init__(self):
        super().__init__()
        self.conv_in = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.block = torch.nn.Sequential(torch.nn.GroupNorm(4, 8), torch.nn.SiLU(), torch.nn.Conv2d(8, 8, 1))
        self.conv_out = torch.nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x, scale):
        return self.conv_out(self.block(self.conv_in(x)) * scale)


def test_the_guard_filter_keeps_every_guard_but_the_modules_and_two_weights_tensor_guards():
    torch._dynamo.reset()
    module = _UNetShaped().eval()
    seen = []

    def recording(entries):
        kept = unet_guard_filter(entries)
        seen.extend(zip(entries, kept))
        return kept

    compiled = torch.compile(module, backend="eager", dynamic=False, options={"guard_filter_fn": recording})
    with torch.no_grad():
        compiled(torch.randn(2, 4, 8, 8), torch.randn(2, 8, 1, 1))
    on_module = [(entry, kept) for entry, kept in seen if entry.orig_guard.source.is_unspecialized_nn_module()]
    # most of Dynamo's guards are on the module (its parameters' tensors, attributes, hooks): dropped but two
    assert len(on_module) > 0.8 * len(seen)
    kept_on_module = sorted(entry.name for entry, kept in on_module if kept)
    assert len(kept_on_module) == 2 and "conv_in" in kept_on_module[0] and "conv_out" in kept_on_module[1]
    assert all(entry.guard_type == "TENSOR_MATCH" for entry, kept in on_module if kept)
    # every other guard stays: the inputs' tensor guards among them
    assert all(kept for entry, kept in seen if not entry.orig_guard.source.is_unspecialized_nn_module())
    assert {"x", "scale"} <= {entry.name for entry, kept in seen if kept and entry.guard_type == "TENSOR_MATCH"}


def test_a_torch_without_guard_filters_compiles_the_unet_with_every_guard(monkeypatch):
    from backend.models import acceleration

    inputs = (torch.randn(2, 4, 8, 8), torch.randn(2, 8, 1, 1))
    for supported in (True, False):
        torch._dynamo.reset()
        monkeypatch.setattr(acceleration, "guard_filters_supported", lambda supported=supported: supported)
        called = []
        module = _UNetShaped().eval()
        compiled = acceleration.compile_unet(module, backend="eager",
                                             guard_filter=lambda entries: called.append(1) or [True] * len(entries))
        with torch.no_grad():
            torch.testing.assert_close(compiled(*inputs), module(*inputs))
        assert bool(called) == supported
