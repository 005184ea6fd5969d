"""The training loop end to end on the tiny model (CPU): overfitting, checkpoints in the inference path, exact
resume after a kill, two gloo processes = one process, bad input refused before training."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.paths import REPO_ROOT
from tests.helpers.processes import python, run, spawn
from tests.helpers.training import single_thread, subprocess_env, tiny_args
from tests.helpers.waiting import wait_until
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


# slow: two previews (~5 s); the default run keeps the strict checkpoint-loading tests and the CLI preview of a
# checkpoint
@pytest.mark.slow
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
    settings = PreviewSettings(steps=1, seed=3, num_views=2)  # two frames still attend across views; half the decode
    expected = generate_preview(trained, image, settings).images
    assert np.array_equal(generate_preview(loaded, image, settings).images, expected)
    initial = load_checkpoint(stage1_checkpoint)
    assert any(not torch.equal(a, b) for a, b in zip(initial.unet.parameters(), trained.unet.parameters()))
    averaged = load_checkpoint(checkpoint / "model-ema.safetensors")
    assert any(not torch.equal(a, b) for a, b in zip(averaged.unet.parameters(), trained.unet.parameters()))


@pytest.mark.integration
def test_kill_and_resume_gives_the_same_losses(dataset_dir, mvdream_checkpoint, dataset_cache, tmp_path):
    common = ("--steps", "4", "--batch-size", "1", "--checkpoint-every", "2", "--ema-decay", "0.9",
              "--cache", str(dataset_cache))
    with single_thread():
        assert main(tiny_args("stage1", dataset_dir, mvdream_checkpoint, tmp_path / "whole", *common)) == 0
    reference = losses(tmp_path / "whole")

    run = tmp_path / "killed"
    command = python("-m", "training.train_cli", *tiny_args("stage1", dataset_dir, mvdream_checkpoint, run, *common))
    log = tmp_path / "killed.log"
    with open(log, "w") as output, spawn(command, cwd=REPO_ROOT, env=subprocess_env(threads=1), stdout=output,
                                         stderr=subprocess.STDOUT) as process:
        def checkpoint_written() -> bool:
            assert process.poll() is None, log.read_text()  # it must still be running when step 2 is saved
            return (run / "checkpoints" / "step-0000002").is_dir()

        wait_until(checkpoint_written, 600, "the checkpoint of step 2")
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
    assert not (run / "checkpoints" / "step-0000004").exists()

    assert main(tiny_args("stage1", dataset_dir, None, run, *common)) == 2  # checkpoints exist: needs --resume
    with single_thread():
        assert main(tiny_args("stage1", dataset_dir, None, run, *common, "--resume")) == 0
    assert losses(run) == reference  # exactly


# slow: two torch.distributed processes (~28 s); the default run keeps the kill-and-resume process test
@pytest.mark.slow
@pytest.mark.integration
def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(dataset_dir, stage1_checkpoint,
                                                                        dataset_cache, tmp_path):
    """Two gloo processes with a batch of 1 each train like one process with a batch of 2.

    Both arms run one thread per process (torch.distributed.run's default for its workers; the in-process arm is
    set to match), so each computes the same arithmetic except where the batch is split. Before the first update the
    two compute the same loss. AdamW's first update is lr * g / (|g| + eps) per element, whatever g's scale, so an
    element whose gradient is rounding noise (exactly zero in exact arithmetic) can move by up to lr either way: the
    two arms may differ by up to 2 lr there and nowhere else. Later steps compound those differences (last measured
    with different thread counts: 1.5e-4 relative on the step-3 loss), so they are compared loosely.
    """
    from backend.models.multiview_model import load_checkpoint

    lr = 1e-5
    common = ("--steps", "3", "--checkpoint-every", "1", "--multiview-probability", "0.5", "--cache",
              str(dataset_cache), "--lr", str(lr))
    with single_thread():
        assert main(tiny_args("stage2", dataset_dir, stage1_checkpoint, tmp_path / "one", "--batch-size", "2",
                              *common)) == 0
    command = python("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "training.train_cli",
                     *tiny_args("stage2", dataset_dir, stage1_checkpoint, tmp_path / "two", "--batch-size", "1", *common))
    result = run(command, cwd=REPO_ROOT, env=subprocess_env(threads=1), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_settings = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run_settings["world_size"] == 2 and run_settings["global_batch"] == 2
    one_losses, two_losses = losses(tmp_path / "one"), losses(tmp_path / "two")
    # step 0: same weights, same samples; only the order of the batch mean's float32 sums may differ (~1e-7
    # relative; measured equal on a 2-core AMD EPYC)
    assert two_losses[0] == pytest.approx(one_losses[0], rel=1e-5)

    def unet_after(run: str, step: int) -> list[torch.Tensor]:
        path = tmp_path / run / "checkpoints" / f"step-{step:07d}" / "model.safetensors"
        return list(load_checkpoint(path).unet.parameters())

    initial = list(load_checkpoint(stage1_checkpoint).unet.parameters())
    one, two = unet_after("one", 1), unet_after("two", 1)
    differences = torch.cat([(a - b).abs().flatten() for a, b in zip(one, two)])
    moves = torch.cat([(a - start).abs().flatten() for a, start in zip(one, initial)])
    assert differences.max() <= 2 * lr * 1.01  # the bound of AdamW's first step (1%: weight decay and rounding)
    # Only noise-level gradients may disagree (measured: 2.5e-5 of the elements by more than 0.1 lr): a rank stepping
    # with its own half of the batch (a missing all-reduce) would move a large share of the elements differently.
    assert (differences > 0.1 * lr).float().mean() < 1e-3, (differences > 0.1 * lr).float().mean()
    assert moves.median() > 0.5 * lr  # ...while the update itself moved most elements by about lr
    # step 3: compounded by two more Adam steps (measured: 9.5e-5 relative on the step-2 loss with equal thread
    # counts, 1.5e-4 with unequal ones), still far closer to each other than to where they started
    np.testing.assert_allclose(two_losses, one_losses, rtol=1e-3)
    one, two = unet_after("one", 3), unet_after("two", 3)
    apart = sum(float((a - b).square().sum()) for a, b in zip(one, two)) ** 0.5
    moved = sum(float((a - start).square().sum()) for a, start in zip(one, initial)) ** 0.5
    assert apart < 0.1 * moved


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
def test_bad_input_is_refused_before_training(case, message, dataset_dir, mvdream_checkpoint, tmp_path, capsys):
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
    assert main(args) == 2  # in this process: the CLI's own subprocess run is in the kill-and-resume test
    stderr = capsys.readouterr().err
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iso3d-train: error: ") and message in lines[0], stderr
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="bpy (the training extra) is not installed")
def test_trains_on_a_dataset_rendered_by_the_real_renderer(tmp_path, mvdream_checkpoint):
    renders = tmp_path / "renders"  # rendered by bpy in a child process: bpy never loads into this one
    result = run(python(Path(__file__).with_name("render_with_blender.py"), renders), cwd=REPO_ROOT,
                 env=subprocess_env(), timeout=600)
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
