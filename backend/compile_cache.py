"""Where compiled kernels persist between processes: one folder the user can see and clear.

``torch.compile`` (Inductor's FX-graph and autotuning caches, AOTAutograd's cache) and Triton keep what they
compiled in this folder, so a second ``iso3d generate`` or a restarted ``iso3d serve`` loads the guidance UNet's
and the field's kernels instead of compiling them again. The folder is ``$ISO3D_COMPILE_CACHE`` if set, else
``~/.cache/iso3d/compile``; deleting it is safe (the next run compiles again). Explicit ``TORCHINDUCTOR_CACHE_DIR``
/ ``TRITON_CACHE_DIR`` settings are respected.
"""

from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENT_VARIABLE = "ISO3D_COMPILE_CACHE"


def compile_cache_dir() -> Path:
    configured = os.environ.get(ENVIRONMENT_VARIABLE)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "iso3d" / "compile"


def use_compile_cache() -> Path:
    """Point torch.compile's and Triton's on-disk caches at ``compile_cache_dir()`` (before the first compile);
    returns the folder."""
    folder = compile_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(folder / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(folder / "triton"))
    try:
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
        inductor_config.autotune_local_cache = True
        import torch._functorch.config as functorch_config

        functorch_config.enable_autograd_cache = True
    except (ImportError, AttributeError):  # an older torch without one of these caches: the others still work
        pass
    return folder
