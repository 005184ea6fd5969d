"""Where compiled kernels persist between processes: one folder the user can see and clear.

``torch.compile`` (Inductor's FX-graph and autotuning caches, AOTAutograd's cache) and Triton keep what they
compiled in this folder, so a second ``iso3d generate`` or a restarted ``iso3d serve`` loads the guidance UNet's
and the field's kernels instead of compiling them again. The folder is ``$ISO3D_COMPILE_CACHE`` if set, else
``~/.cache/iso3d/compile``; deleting it is safe (the next run compiles again). nerfacc's CUDA extension, which
nerfacc builds with ninja on its first use (50-60 s on the H200's host), is built there too (``torch_extensions``,
torch's ``TORCH_EXTENSIONS_DIR``): until 2026-12-04 it went to torch's default, ``~/.cache/torch_extensions``, so
the folder was not all that a new process needed, and a benchmark that carried the folder to a fresh machine
(session 16's "warm" memory plan of 72.9 s) paid the build again. Explicit ``TORCHINDUCTOR_CACHE_DIR`` /
``TRITON_CACHE_DIR`` / ``TORCH_EXTENSIONS_DIR`` settings are respected, except ``TORCHINDUCTOR_CACHE_DIR`` at
torch's own default (``/tmp/torchinductor_<user>``): torch writes that default into the environment the first
time it asks for its cache folder, which importing diffusers or ``torch._dynamo`` does before any compile, so a
default there says nothing about what the user chose (until 2026-12-03 this module took it for a choice, and
Inductor's caches stayed in /tmp).
"""

from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENT_VARIABLE = "ISO3D_COMPILE_CACHE"
# Dynamo's traced frames are not kept: each process traces again (seconds) and loads Inductor's code from the folder.
# torch's experimental caching precompile, which would keep them, stalled a GPU run (2026-12-03, bench/RESULTS.md:
# a 300-step run had not ended 8 minutes after tracing the field) and was taken out.


def compile_cache_dir() -> Path:
    configured = os.environ.get(ENVIRONMENT_VARIABLE)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "iso3d" / "compile"


def use_compile_cache() -> Path:
    """Point torch.compile's and Triton's on-disk caches, and torch's C++/CUDA extension builds (nerfacc's), at
    ``compile_cache_dir()`` (before the first compile or extension load); returns the folder."""
    folder = compile_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    inductor = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if inductor is None or _is_torch_default(inductor):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder / "inductor")
    os.environ.setdefault("TRITON_CACHE_DIR", str(folder / "triton"))
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(folder / "torch_extensions"))
    try:
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
        inductor_config.autotune_local_cache = True
        import torch._functorch.config as functorch_config

        functorch_config.enable_autograd_cache = True
    except (ImportError, AttributeError):  # an older torch without one of these caches: the others still work
        pass
    return folder


def _is_torch_default(inductor_folder: str) -> bool:
    """Whether ``inductor_folder`` is the folder torch picks when none is set (and writes into the environment)."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # another torch: nothing to tell a default from a choice with
        return False
    return os.path.abspath(inductor_folder) == os.path.abspath(default_cache_dir())
