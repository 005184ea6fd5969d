"""Inference speed-ups for the multi-view UNet on a GPU, each exact up to floating-point rounding.

- fused q/k/v projections of the multi-view self-attention (one matmul instead of three);
- channels-last memory layout for the convolutions;
- torch.compile, optionally with CUDA graphs (``mode="reduce-overhead"``), which removes the launch overhead of
  the ~1,000 kernels of one UNet call. The eager module stays available as ``model.eager_unet``.

And for the SDS path, where the VAE encoder runs forward and backward every step: the encoder (+ quant_conv)
compiled (``model.vae_encoder_moments``; forward and backward through AOTAutograd) in channels-last layout, its
forward and backward replayed from CUDA graphs under ``--compile cudagraphs`` (backend.models.graphed_encoder;
torch.compile's own CUDA graphs do not fit: its outputs live on into the step's backward, past the UNet's graphed
call). The eager VAE stays as it was for everything else.
"""

from __future__ import annotations

import re

import torch


def fuse_self_attention_projections(unet) -> None:
    for name, module in unet.named_modules():
        if name.endswith("attn1") and hasattr(module, "fuse_projections"):
            module.fuse_projections()


# The UNet's parameters whose tensor guards (dtype, device, shape) are kept (see ``unet_guard_filter``): a guard's
# name is its source path, e.g. "self.__dict__['_modules']['conv_in']._parameters['weight']" (torch 2.13) or
# "L['self'].conv_in.weight"; either form matches
GUARDED_UNET_PARAMETERS = re.compile(r"\bconv_(in|out)\b.*\bweight\b")


def unet_guard_filter(guard_entries) -> list[bool]:
    """Which of Dynamo's guards the compiled UNet keeps: all but those on the module itself, and of those the
    tensor guards of ``GUARDED_UNET_PARAMETERS``.

    Dynamo checks every guard on every call: for the published UNet ~700 parameters' tensor guards and thousands of
    module-attribute guards: 1.87 ms a call on the 2-core CI host against 0.13 ms without the module's (``python
    bench/unet_guards.py --device cpu``, bench/RESULTS.md, 2026-12-04), each preview and SDS step. Nothing changes
    the UNet's modules after it is compiled (its weights are loaded, cast and put in eval mode first), and its
    parameters are the compiled graph's inputs, read at each call. What the module guards would catch, another UNet
    instance passed through the same compiled code (Dynamo's cache is per code object), is caught by the kept tensor
    guards where its dtype, device or width differ (``torch.compiler.skip_guard_on_all_nn_modules_unsafe`` keeps
    none); a UNet of the same weights' shapes runs the same graph on its own weights."""
    keep = []
    for entry in guard_entries:
        try:
            on_module = entry.orig_guard.source.is_unspecialized_nn_module()
        except AttributeError:  # a torch whose guard entries do not say where a guard comes from: it stays
            on_module = False
        keep.append(not on_module or (entry.guard_type == "TENSOR_MATCH"
                                      and GUARDED_UNET_PARAMETERS.search(entry.name) is not None))
    return keep


def guard_filters_supported() -> bool:
    """Whether this torch's torch.compile takes a ``guard_filter_fn`` (torch 2.8 and later, which also brought
    ``torch.compiler``'s guard-filter helpers; an older torch (the project allows 2.4) compiles with every guard)."""
    return hasattr(torch.compiler, "skip_guard_on_all_nn_modules_unsafe")


def compile_unet(unet, compile_mode: str = "default", backend: str = "inductor", guard_filter=True):
    """``torch.compile`` of the UNet for fixed shapes (a new batch shape compiles anew): ``compile_mode`` as
    torch.compile's mode (Inductor's options; "reduce-overhead": CUDA graphs), ``backend`` (tests: "eager"),
    ``guard_filter``: True: Dynamo's guards as ``unet_guard_filter`` keeps them, False: all of them, or a
    torch.compile ``guard_filter_fn`` (bench/unet_guards.py counts the guards through one)."""
    options = {}
    if backend == "inductor":  # the mode as Inductor options (torch.compile takes a mode or options, not both)
        from torch._inductor import list_mode_options

        options = dict(list_mode_options(compile_mode or "default"))
    if guard_filter and guard_filters_supported():
        options["guard_filter_fn"] = unet_guard_filter if guard_filter is True else guard_filter
    return torch.compile(unet, backend=backend, dynamic=False, options=options or None)


def accelerate_for_inference(model, compile_mode: str | None = "reduce-overhead", channels_last: bool = True,
                             backend: str = "inductor", guard_filter=True):
    """Apply the speed-ups to ``model.unet`` in place (the model must already be on its device and dtype).

    ``compile_mode``: None (no compile), "default", "max-autotune-no-cudagraphs" or "reduce-overhead"
    (compile + CUDA graphs). The first calls after this compile (about a minute for the published size).
    ``backend`` and ``guard_filter``: as ``compile_unet``'s."""
    unet = getattr(model, "eager_unet", None) or model.unet
    fuse_self_attention_projections(unet)
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    model.eager_unet = unet
    model.unet = compile_unet(unet, compile_mode, backend, guard_filter) if compile_mode else unet
    return model


def accelerate_for_run(model, compile_mode: str, device: torch.device):
    """``--compile compile_mode`` ("off", "default" or "cudagraphs"; ``auto`` resolved by the caller) applied to a
    loaded model, as ``iso3d generate`` and ``iso3d serve`` apply it: the UNet (CUDA graphs under "cudagraphs";
    channels-last on CUDA) and the SDS VAE encoder (``vae_encoder_compile_mode``, ``vae_encoder_graphs``)."""
    if compile_mode == "off":
        return model
    device = torch.device(device)
    accelerate_for_inference(model, "reduce-overhead" if compile_mode == "cudagraphs" else "default",
                             channels_last=device.type == "cuda")
    compile_vae_encoder(model, vae_encoder_compile_mode(compile_mode, device),
                        cuda_graphs=vae_encoder_graphs(compile_mode, device))
    return model


def vae_encoder_compile_mode(unet_compile: str, device: torch.device) -> str | None:
    """The torch.compile mode of the SDS VAE encoder for ``--compile unet_compile`` on ``device``: compiled
    ("default": Inductor's code; CUDA graphs come from ``vae_encoder_graphs``) on CUDA whenever the UNet is compiled
    at all, else None (eager: on the CPU a compile costs more than the few steps of a CPU run gain)."""
    if torch.device(device).type != "cuda" or unet_compile in ("off", None):
        return None
    return "default"


def vae_encoder_graphs(unet_compile: str, device: torch.device) -> bool:
    """Whether the compiled SDS VAE encoder replays from CUDA graphs: on CUDA under ``--compile cudagraphs`` (what
    ``auto`` means there), as the UNet does."""
    return torch.device(device).type == "cuda" and unet_compile == "cudagraphs"


def compile_vae_encoder(model, mode: str | None = "default", channels_last: bool = True, backend: str = "inductor",
                        cuda_graphs: bool = False, force_layout: bool = True, plain_attention: bool = True):
    """Set ``model.vae_encoder_moments`` to the compiled ``encoder_moments`` of ``model.vae`` (None: unset it);
    ``cuda_graphs``: wrapped to replay its forward and backward from CUDA graphs (a GraphedEncoder).

    ``channels_last``: the encoder's weights and its input in channels-last layout (cuDNN's fast path for half
    precision convolutions; the values stay those of the same convolutions). ``backend``: torch.compile's backend
    (tests use "aot_eager" to check the traced path without a C++ toolchain).

    ``force_layout``: Inductor keeps its own buffers channels-last too. Its heuristic turns that off for a graph
    with a backward and a convolution with fewer outputs than half its inputs (the encoder's last, 512 -> 8
    channels), and then every convolution's gradient is transposed to channels-last and back: 29 copies, 2.2 of
    the 11.0 ms of GPU time of 4 views' forward and backward. ``plain_attention``: the encoder's one attention (its mid
    block's, 1,024 tokens of 512 channels at 256^2) as matmuls and a softmax, the reference's own AttnBlock; SDPA's
    memory-efficient backward took 1.5 ms for it. Together 11.0 -> 8.1 ms (4 views), 20.9 -> 15.9 ms (8 views) of GPU
    time; bench/vae_encoder.py --variants, H200, 2026-12-03."""
    from backend.models.vae import encoder_moments

    if mode is None:
        model.vae_encoder_moments = None
        return model
    vae = model.vae
    if plain_attention:  # the encoder's attention only: the decoder (previews) keeps its own
        from diffusers.models.attention_processor import AttnProcessor

        for attention in vae.encoder.mid_block.attentions:
            if attention is not None:
                attention.set_processor(AttnProcessor())
    layout = torch.channels_last if channels_last else torch.contiguous_format
    for module in (vae.encoder, vae.quant_conv):
        if module is not None:
            module.to(memory_format=layout)

    def moments(images: torch.Tensor) -> torch.Tensor:
        return encoder_moments(vae, images.contiguous(memory_format=layout))

    options = {}
    if backend == "inductor":  # the mode as Inductor options (torch.compile takes a mode or options, not both)
        from torch._inductor import list_mode_options

        inductor_options = dict(list_mode_options(mode or "default"))
        if force_layout:
            inductor_options["force_layout_optimization"] = True
        options = {"options": inductor_options}
    compiled = torch.compile(moments, backend=backend, dynamic=False, **options)
    if cuda_graphs:
        from backend.models.graphed_encoder import GraphedEncoder

        compiled = GraphedEncoder(compiled)
    model.vae_encoder_moments = compiled
    return model
