"""Environment fixes that must run before diffusers or open_clip import torchvision.

Some CPU builds of torch cannot load PyPI torchvision's compiled extension. torchvision then fails at import
with ``operator torchvision::nms does not exist`` (its meta registrations need the op schemas), which breaks
``import open_clip`` and diffusers. We register the two schemas, and only when the real extension cannot be
loaded: on a machine where torchvision works (for example CUDA torch with its matching torchvision) nothing
is touched.
"""

from __future__ import annotations

import glob
import importlib.util
import os

_checked = False


def _torchvision_ops_present(torch) -> bool:
    try:
        torch.ops.torchvision.nms  # noqa: B018 - attribute lookup is the check
        return True
    except (AttributeError, RuntimeError):
        return False


def ensure_torchvision_ops() -> bool:
    """Make ``import torchvision`` work. Returns True when stub schemas had to be registered."""
    global _checked, _library
    if _checked:
        return False
    _checked = True
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None or _torchvision_ops_present(torch):
        return False
    package_dir = os.path.dirname(spec.origin)
    for path in glob.glob(os.path.join(package_dir, "_C*.so")) + glob.glob(os.path.join(package_dir, "_C*.pyd")):
        try:
            torch.ops.load_library(path)
        except (OSError, RuntimeError):
            continue
        if _torchvision_ops_present(torch):
            return False
    # The real ops are missing: declare their schemas so torchvision's Python side imports. Nothing in this
    # project calls them.
    _library = torch.library.Library("torchvision", "FRAGMENT")
    _library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return True


_library = None
