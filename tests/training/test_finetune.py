"""The training loop end to end on the tiny model (CPU): overfitting, checkpoints in the inference path, exact
resume after a kill, two gloo processes = one process, bad input refused before training."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.finetune_fixtures import (  # noqa: F401 - fixtures
    REPO_ROOT,
    dataset_cache,
    dataset_dir,
    mvdream_checkpoint,
    run_cli,
    single_thread,
    stage1_checkpoint,
    subprocess_env,
    tiny_args,
)
from training.train_cli import main


def losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["step"] for e in entries] == list(range(len(entries)))
    return [e["loss"] for e in entries]


def test_stage1_overfits_a_fixed_batch_from_mvdream_layout(dataset_dir, mvdream_checkpoint, dataset_cache, tmp_path):
    args = tiny_args("stage1", dataset_dir, mvdream_checkpoint, tmp_path / "run", "--steps", "8", "--batch-size",
                     "2", "--multiview-probability", "1", "--condition-drop", "0", "--overfit-one-batch",
                     "--checkpoint-every", "100", "--cache", str(dataset_cache))
    assert main(args) == 0
    sequence = losses(tmp_path / "run")
    assert len(sequence) == 8
    assert np.mean(sequence[-3:]) < 0.5 * np.mean(sequence[:3]), sequence


def test_checkpoint_loads_strictly_into_the_inference_path_with_the_same_outputs(dataset_dir, stage1_checkpoint,
                                                                                 dataset_cache, tmp_path):
    from backend.diffusion.preview import PreviewSettings, generate_preview
    from backend.models.multiview_model import load_checkpoint
    from training.finetune import FinetuneConfig, train

    config = FinetuneConfig(stage=2, data=dataset_dir, out=tmp_path / "run", init=stage1_checkpoint, tiny=True,
                            steps=2, batch_size=1, learning_rate=1e-3, precision="fp32", num_workers=0,
                            ema_decay=0.5, progress=False, checkpoint_every=2, cache=dataset_cache)
    result = train(config)
    checkpoint = Path(result["checkpoint"])
    assert checkpoint.name == "step-0000002"
    trained = result["model"]
    loaded = load_checkpoint(checkpoint / "model.safetensors")  # strict: every key, every shape
    assert loaded.configs == trained.configs
    image = torch.rand(1, 3, 256, 256) * 2 - 1
    settings = PreviewSettings(steps=1, seed=3)
    expected = generate_preview(trained, image, settings).images
    assert np.array_equal(generate_preview(loaded, image, settings).images, expected)
    initial = load_checkpoint(stage1_checkpoint)
    assert any(not torch.equal(a, b) for a, b in zip(initial.unet.parameters(), trained.unet.parameters()))
    averaged = load_checkpoint(checkpoint / "model-ema.safetensors")
    assert any(not torch.equal(a, b) for a, b in zip(averaged.unet.parameters(), trained.unet.parameters()))


def test_kill_and_resume_gives_the_same_losses(dataset_dir, mvdream_checkpoint, dataset_cache, tmp_path):
    common = ("--steps", "4", "--batch-size", "1", "--checkpoint-every", "2", "--ema-decay", "0.9",
              "--cache", str(dataset_cache))
    with single_thread():
        assert main(tiny_args("stage1", dataset_dir, mvdream_checkpoint, tmp_path / "whole", *common)) == 0
    reference = losses(tmp_path / "whole")

    run = tmp_path / "killed"
    command = [sys.executable, "-m", "training.train_cli",
               *tiny_args("stage1", dataset_dir, mvdream_checkpoint, run, *common)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=subprocess_env(threads=1), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "step-0000002").is_dir():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (run / "checkpoints" / "step-0000004").exists()

    assert main(tiny_args("stage1", dataset_dir, None, run, *common)) == 2  # checkpoints exist: needs --resume
    with single_thread():
        assert main(tiny_args("stage1", dataset_dir, None, run, *common, "--resume")) == 0
    assert losses(run) == reference  # exactly


def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(dataset_dir, stage1_checkpoint,
                                                                        dataset_cache, tmp_path):
    from backend.models.multiview_model import load_checkpoint

    # A small LR: Adam's normalised step would turn last-bit differences of near-zero gradients (batch of 2 in
    # one process vs. 1 + 1 reduced by gloo) into differences of the size of the LR.
    common = ("--steps", "3", "--checkpoint-every", "3", "--multiview-probability", "0.5", "--cache",
              str(dataset_cache), "--lr", "1e-5")
    assert main(tiny_args("stage2", dataset_dir, stage1_checkpoint, tmp_path / "one", "--batch-size", "2", *common)) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "training.train_cli",
               *tiny_args("stage2", dataset_dir, stage1_checkpoint, tmp_path / "two", "--batch-size", "1", *common)]
    result = subprocess.run(command, cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    run_settings = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run_settings["world_size"] == 2 and run_settings["global_batch"] == 2
    np.testing.assert_allclose(losses(tmp_path / "two"), losses(tmp_path / "one"), rtol=1e-4)
    one = load_checkpoint(tmp_path / "one" / "checkpoints" / "step-0000003" / "model.safetensors")
    two = load_checkpoint(tmp_path / "two" / "checkpoints" / "step-0000003" / "model.safetensors")
    initial = load_checkpoint(stage1_checkpoint)
    moved = apart = 0.0
    for a, b, start in zip(one.unet.parameters(), two.unet.parameters(), initial.unet.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=3e-5)  # at most a few LR-sized steps apart...
        moved += float((a - start).square().sum())
        apart += float((a - b).square().sum())
    assert apart**0.5 < 0.1 * moved**0.5  # ...and far closer to each other than to where they started


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", "no rendered objects"),
        ("half-rendered", "unfinished or broken"),
        ("stage2-from-mvdream", "run stage 1 first"),
        ("not-a-checkpoint", "not a readable checkpoint"),
        ("published-size-expected", "not of the published size"),
    ],
)
def test_bad_input_is_refused_before_training(case, message, dataset_dir, mvdream_checkpoint, tmp_path):
    import shutil

    data, init, stage, extra = dataset_dir, mvdream_checkpoint, "stage1", []
    if case == "empty":
        data = tmp_path / "empty"
        data.mkdir()
    elif case == "half-rendered":
        data = tmp_path / "half"
        shutil.copytree(dataset_dir, data)
        (data / "object_001" / "fixed_003.png").unlink()
    elif case == "stage2-from-mvdream":
        stage = "stage2"
    elif case == "not-a-checkpoint":
        init = tmp_path / "model.ckpt"
        init.write_bytes(b"this is not a checkpoint")
    args = tiny_args(stage, data, init, tmp_path / "run", "--steps", "1", *extra)
    if case == "published-size-expected":
        args.remove("tiny")
        args.remove("--model")
    result = run_cli(args, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iso3d-train: error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.skipif(subprocess.run([sys.executable, "-c", "import bpy"], capture_output=True).returncode != 0,
                    reason="bpy (the training extra) is not installed")
def test_trains_on_a_dataset_rendered_by_the_real_renderer(tmp_path, mvdream_checkpoint):
    renders = tmp_path / "renders"
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("render_with_blender.py")), str(renders)],
                            cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    args = tiny_args("stage1", renders, mvdream_checkpoint, tmp_path / "run", "--steps", "2", "--checkpoint-every", "2")
    assert main(args) == 0
    assert len(losses(tmp_path / "run")) == 2
    assert (tmp_path / "run" / "checkpoints" / "step-0000002" / "model.safetensors").is_file()


def test_tiny_runs_without_init_are_told_how_to_make_one_and_init_tiny_refuses_to_overwrite(
        dataset_dir, mvdream_checkpoint, tmp_path, capsys):
    assert main(tiny_args("stage1", dataset_dir, None, tmp_path / "run", "--steps", "1")) == 2
    assert "iso3d-train init-tiny OUT.safetensors" in capsys.readouterr().err
    assert main(["init-tiny", str(mvdream_checkpoint)]) == 2
    assert "exists" in capsys.readouterr().err


def test_preview_with_a_checkpoint_without_image_encoder_is_a_one_line_error(mvdream_checkpoint, tmp_path, capsys):
    from PIL import Image

    from backend.cli import main as iso3d

    image = tmp_path / "input.png"
    Image.new("RGB", (32, 32), "white").save(image)
    code = iso3d(["preview", str(image), "--checkpoint", str(mvdream_checkpoint), "--device", "cpu",
                  "--out", str(tmp_path / "preview.png")])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "has no image encoder" in lines[0] and "iso3d-train stage1" in lines[0]
    assert not (tmp_path / "preview.png").exists()
