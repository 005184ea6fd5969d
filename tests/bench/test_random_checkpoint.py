"""bench/random_checkpoint.py writes a checkpoint the CLI's loader reads back as the model it was made from."""

from __future__ import annotations

import pytest
import torch

from backend.models.multiview_model import build_tiny_model, load_checkpoint
from blender_addon.core.atomic_files import PARTIAL_SUFFIX
from tests.helpers.bench_scripts import bench_script


@pytest.fixture(scope="module")
def script():
    with bench_script("random_checkpoint") as module:
        yield module


def test_the_tiny_checkpoint_loads_as_the_model_of_its_seed(script, tmp_path, capsys):
    out = tmp_path / "tiny_random.safetensors"
    assert script.main(["--tiny", "--seed", "3", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} (")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(PARTIAL_SUFFIX)] == []
    loaded, made = load_checkpoint(out), build_tiny_model(seed=3)
    assert loaded.name == out.name
    for (name, value), (_, expected) in zip(loaded.unet.state_dict().items(), made.unet.state_dict().items()):
        assert torch.equal(value, expected), name
    assert not torch.equal(next(iter(build_tiny_model(seed=4).unet.parameters())),
                           next(iter(loaded.unet.parameters())))  # another seed, other weights


@pytest.mark.parametrize("arguments, message", [
    (["--out", "model.bin"], "random checkpoint: --out model.bin: the file must end in .ckpt, .pt, .pth, .safetensors"),
    (["--tiny", "--out", "model.ckpt"],
     "random checkpoint: --tiny needs a .safetensors file (the only format that keeps the model's sizes)"),
])
def test_a_file_it_cannot_write_is_refused_in_one_line(script, capsys, arguments, message):
    assert script.main(arguments) == 2
    assert capsys.readouterr().err.strip() == message
