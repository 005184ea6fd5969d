"""The torchvision fix: importing diffusers and open_clip works in a fresh interpreter, and the fix is a no-op when
the real operators exist."""

from __future__ import annotations

import pytest

from tests.helpers.paths import REPO_ROOT
from tests.helpers.processes import python, run

pytestmark = pytest.mark.integration  # a fresh interpreter each: the fix acts on first import


def run_python(code: str):
    return run(python("-c", code), cwd=REPO_ROOT, timeout=600)


def test_open_clip_and_diffusers_import_after_the_fix():
    result = run_python(
        "from backend.compat import ensure_torchvision_ops\n"
        "ensure_torchvision_ops()\n"
        "import torch, torchvision, open_clip\n"
        "from diffusers import UNet2DConditionModel, AutoencoderKL\n"
        "print('nms' in dir(torch.ops.torchvision) or hasattr(torch.ops.torchvision, 'nms'))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_the_fix_runs_once_and_leaves_existing_ops_alone():
    result = run_python(
        "import torch\n"
        "from backend import compat\n"
        "first = compat.ensure_torchvision_ops()\n"
        "second = compat.ensure_torchvision_ops()\n"
        "compat._checked = False\n"
        "third = compat.ensure_torchvision_ops()  # the ops exist now (real or declared): nothing is registered\n"
        "print(first in (True, False), second, third)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True False False"
